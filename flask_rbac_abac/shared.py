"""The contract between the library and the identity provider (``idp_app``).

The identity provider writes what every service reads, so both sides must agree on the
attribute model, the key schema, the value encoding, the write rules, the Redis URL schemes, the
token and value-signing settings and the metrics exposition. The names below are that
agreement, and the identity provider imports from ``flask_rbac_abac`` through this module only
(an import-linter contract in ``setup.cfg`` keeps it so). Each is public API: changing one is a
breaking change for the identity provider, and is noted in ``CHANGES.rst``.

- the model: :class:`UserAttributes`, :class:`Invalidation` and the validators of key parts
  (:mod:`flask_rbac_abac.model`);
- the keys: every Redis key and channel name, and the key prefix (:mod:`flask_rbac_abac.keys`);
- the value encoding: :func:`encode_value` / :func:`decode_value`, signed with the value keys
  when there are some (:mod:`flask_rbac_abac.codec`);
- the writes: the compare-and-set store (:func:`write_attributes`, its batch form and their
  :class:`StoreResult`), the in-place partial update (:func:`patch_attributes`), the guarded
  replacement, the delete and the announcement
  (:mod:`flask_rbac_abac.store`), so a valid newer version is never overwritten whoever writes;
- Redis connections: :func:`connect` (small timeouts, bounded retry) and :func:`check_scheme`
  (:mod:`flask_rbac_abac.connection`);
- settings both sides read the same way: the defaults of the shared keys
  (:mod:`flask_rbac_abac.defaults`), the HS256 secret rule (:func:`jwt_secret`), the value keys
  (:func:`value_keys`) and the parsers that name the bad key (:mod:`flask_rbac_abac.config`);
- the Prometheus exposition both sides serve, one registry per gunicorn worker or a multiprocess
  directory (:mod:`flask_rbac_abac.metrics`);
- the errors those raise (:mod:`flask_rbac_abac.errors`).

Not shared: how long what the identity provider writes lives in Redis. The identity provider
writes every entry services read, so that TTL is its own setting (``idp_app.settings``); a
service's ``RBAC_ABAC_CACHE_TTL`` only applies to entries the service writes itself.
"""

from __future__ import annotations

from .codec import ValueKeys, decode_value, encode_value
from .config import (
    as_bool,
    jwt_secret,
    non_negative_int,
    positive_float,
    positive_int,
    value_keys,
)
from .connection import check_scheme, connect
from .defaults import DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEFAULT_REDIS_URL
from .errors import ConfigurationError, DecodeError, InvalidKeyPart
from .keys import (
    DEFAULT_KEY_PREFIX,
    attributes_key,
    coalesce_key,
    invalidation_channel,
    validate_prefix,
)
from .metrics import AVAILABLE, CONTENT_TYPE, exposition, multiprocess_dir, require_prometheus
from .model import Invalidation, UserAttributes, validate_service_name, validate_user_id
from .store import (
    PatchResult,
    StoreResult,
    delete_attributes,
    patch_attributes,
    publish_invalidation,
    replace_if_unchanged,
    store_attributes,
    write_attributes,
    write_attributes_batch,
)

__all__ = [
    "AVAILABLE",
    "CONTENT_TYPE",
    "DEFAULT_AUDIENCE",
    "DEFAULT_ISSUER",
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_REDIS_URL",
    "ConfigurationError",
    "DecodeError",
    "InvalidKeyPart",
    "Invalidation",
    "PatchResult",
    "StoreResult",
    "UserAttributes",
    "ValueKeys",
    "as_bool",
    "attributes_key",
    "check_scheme",
    "coalesce_key",
    "connect",
    "decode_value",
    "delete_attributes",
    "encode_value",
    "exposition",
    "invalidation_channel",
    "jwt_secret",
    "multiprocess_dir",
    "non_negative_int",
    "patch_attributes",
    "positive_float",
    "positive_int",
    "publish_invalidation",
    "replace_if_unchanged",
    "require_prometheus",
    "store_attributes",
    "validate_prefix",
    "validate_service_name",
    "validate_user_id",
    "value_keys",
    "write_attributes",
    "write_attributes_batch",
]

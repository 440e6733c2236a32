"""Every Redis key and channel name the library and the identity provider use.

One place for the key schema, so a reader (or an operator with ``redis-cli``) finds every name
here and both sides agree by construction::

    {prefix}:attrs:{service}:{user}      one user's attributes in one service (written by the IdP)
    {prefix}:lease:{service}:{user}      a service process's short refresh lease
    {prefix}:coalesce:{service}:{user}   the IdP's refresh-coalescing window
    {prefix}:invalidate                  the pub/sub channel of change announcements

Each key names exactly one entry, so every command touches one slot (Redis Cluster works).
The parts must already be valid: :func:`validate_prefix` here, and
:func:`~flask_rbac_abac.model.validate_service_name` /
:func:`~flask_rbac_abac.model.validate_user_id` for the others, which keep delimiters and glob
characters out of every key.
"""

from __future__ import annotations

from .errors import InvalidKeyPart
from .model import NAME_RE

#: The prefix of every key when ``RBAC_ABAC_KEY_PREFIX`` is not set.
DEFAULT_KEY_PREFIX = "rbac_abac"


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a valid key prefix (same alphabet as service names)."""
    if not isinstance(prefix, str) or not NAME_RE.fullmatch(prefix):
        raise InvalidKeyPart(
            f"invalid key prefix {prefix!r}: expected 1-64 characters from A-Z a-z 0-9 _ . -"
        )
    return prefix


def attributes_key(prefix: str, service_name: str, user_id: int | str) -> str:
    """The Redis key holding one user's attributes in one service."""
    return f"{prefix}:attrs:{service_name}:{user_id}"


def lease_key(prefix: str, service_name: str, user_id: int | str) -> str:
    """The Redis key of the short lease that lets one process refresh an entry at a time."""
    return f"{prefix}:lease:{service_name}:{user_id}"


def coalesce_key(prefix: str, service_name: str, user_id: int | str) -> str:
    """The identity provider's short-lived key that lets one refresh per window load from the
    database (and remembers, for that window, that a user is unknown)."""
    return f"{prefix}:coalesce:{service_name}:{user_id}"


def invalidation_channel(prefix: str) -> str:
    """The pub/sub channel on which the identity provider announces changes."""
    return f"{prefix}:invalidate"

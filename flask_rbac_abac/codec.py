"""The encoding of a stored value: the JSON text in Redis, signed or not, and back.

A value is :meth:`UserAttributes.to_json <flask_rbac_abac.model.UserAttributes.to_json>`, the
canonical JSON of the model. With value-signing keys (``RBAC_ABAC_VALUE_KEYS``) it also carries an
HMAC-SHA256 of that canonical form in its :data:`SIGNATURE_FIELD`, so a reader holding the keys
refuses a value planted in Redis by anyone without them. The identity provider encodes through
:func:`encode_value` (via :mod:`.store`) and both sides decode through :func:`decode_value`, so
they agree by construction. Only JSON, never pickle. No I/O here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping

from .errors import DecodeError, InvalidKeyPart
from .model import NAME_RE, UserAttributes

#: The field of a signed value holding ``{"kid": key id, "mac": HMAC-SHA256 hex}``.
SIGNATURE_FIELD = "sig"
#: The shortest value-signing secret accepted (as for HS256 tokens).
MIN_VALUE_KEY_BYTES = 32


#: Value-signing keys: key id -> secret. The first one signs; every one verifies (rotation).
ValueKeys = Mapping[str, bytes]


def parse_value_keys(value: object, what: str = "RBAC_ABAC_VALUE_KEYS") -> dict[str, bytes]:
    """``"kid:secret,kid2:secret2"`` or a mapping as :data:`ValueKeys`; ``{}`` when unset.

    Key ids use the service-name alphabet; secrets have at least
    :data:`MIN_VALUE_KEY_BYTES` bytes. Errors are :class:`InvalidKeyPart` naming ``what``.
    """
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        pairs = [item.partition(":")[::2] for item in value.split(",") if item.strip()]
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        raise InvalidKeyPart(f"{what} must be 'kid:secret,...' or a mapping, not {value!r}")
    keys: dict[str, bytes] = {}
    for kid, secret in pairs:
        if not isinstance(kid, str) or not NAME_RE.fullmatch(kid.strip()):
            raise InvalidKeyPart(f"{what}: invalid key id {kid!r}")
        raw = secret.encode() if isinstance(secret, str) else secret
        if not isinstance(raw, bytes) or len(raw) < MIN_VALUE_KEY_BYTES:
            raise InvalidKeyPart(
                f"{what}: the secret of key {kid.strip()!r} must have at least "
                f"{MIN_VALUE_KEY_BYTES} bytes"
            )
        keys[kid.strip()] = raw
    return keys


def _mac(secret: bytes, attrs: UserAttributes) -> str:
    return hmac.new(secret, attrs.to_json().encode(), hashlib.sha256).hexdigest()


def encode_value(attrs: UserAttributes, keys: ValueKeys | None = None) -> str:
    """The JSON stored in Redis: :meth:`UserAttributes.to_json`, signed with the first of
    ``keys`` when there are keys, so readers holding them can refuse a planted value."""
    if not keys:
        return attrs.to_json()
    kid, secret = next(iter(keys.items()))
    data = attrs.to_dict()
    data[SIGNATURE_FIELD] = {"kid": kid, "mac": _mac(secret, attrs)}
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def decode_value(raw: str | bytes, keys: ValueKeys | None = None) -> UserAttributes:
    """Decode a stored value; with ``keys``, one without a valid signature by one of them
    raises :class:`DecodeError` (so a reader treats it as a miss), whatever it says.

    The MAC covers the canonical encoding of the decoded value, so no field can be changed.
    """
    attrs = UserAttributes.from_json(raw)
    if not keys:
        return attrs
    sig = json.loads(raw).get(SIGNATURE_FIELD)
    if not isinstance(sig, dict) or not isinstance(sig.get("mac"), str):
        raise DecodeError("value is not signed")
    kid = sig.get("kid")
    secret = keys.get(kid) if isinstance(kid, str) else None
    if secret is None:
        raise DecodeError("value is signed with an unknown key id")
    if not hmac.compare_digest(sig["mac"], _mac(secret, attrs)):
        raise DecodeError("value has a bad signature")
    return attrs

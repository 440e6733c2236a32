"""The attribute model, its JSON encoding and the Redis key schema.

This is the one module that owns what is written to Redis: the library reads through it and the
identity provider writes through it, so both sides agree by construction. Values are JSON with a
schema version; nothing here ever unpickles.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from redis.exceptions import NoScriptError

from .errors import DecodeError, InvalidKeyPart

#: Bumped whenever the JSON layout of :class:`UserAttributes` changes incompatibly.
SCHEMA_VERSION = 1
#: Values larger than this are refused on decode (a guard against a poisoned key).
MAX_VALUE_BYTES = 256 * 1024
DEFAULT_KEY_PREFIX = "rbac_abac"

#: The field of a signed value holding ``{"kid": key id, "mac": HMAC-SHA256 hex}``.
SIGNATURE_FIELD = "sig"
#: The shortest value-signing secret accepted (as for HS256 tokens).
MIN_VALUE_KEY_BYTES = 32

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_USER_RE = re.compile(r"[A-Za-z0-9_.@-]{1,128}")
_MAX_USER_ID = 2**63 - 1


def validate_service_name(name: object) -> str:
    """Return ``name`` if it is safe inside a key: 1-64 of ``A-Z a-z 0-9 _ . -``."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidKeyPart(
            f"invalid service_name {name!r}: expected 1-64 characters from A-Z a-z 0-9 _ . -"
        )
    return name


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a valid key prefix (same alphabet as service names)."""
    if not isinstance(prefix, str) or not _NAME_RE.fullmatch(prefix):
        raise InvalidKeyPart(
            f"invalid key prefix {prefix!r}: expected 1-64 characters from A-Z a-z 0-9 _ . -"
        )
    return prefix


def validate_user_id(user_id: object) -> int | str:
    """Return a normalised user id: a positive int, or a short string id.

    Decimal strings become ints, so ``"123"`` and ``123`` name the same cache entry.
    """
    if isinstance(user_id, str) and user_id.isascii() and user_id.isdigit():
        if len(user_id) > 19:
            raise InvalidKeyPart("invalid user_id: too large")
        user_id = int(user_id)
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        if 1 <= user_id <= _MAX_USER_ID:
            return user_id
        raise InvalidKeyPart(f"invalid user_id {user_id!r}: must be between 1 and 2**63-1")
    if isinstance(user_id, str) and _USER_RE.fullmatch(user_id):
        return user_id
    raise InvalidKeyPart(
        f"invalid user_id {user_id!r}: expected a positive integer or "
        "1-128 characters from A-Z a-z 0-9 _ . @ -"
    )


def attributes_key(prefix: str, service_name: str, user_id: int | str) -> str:
    """The Redis key holding one user's attributes in one service."""
    return f"{prefix}:attrs:{service_name}:{user_id}"


def lease_key(prefix: str, service_name: str, user_id: int | str) -> str:
    """The Redis key of the short lease that lets one process refresh an entry at a time."""
    return f"{prefix}:lease:{service_name}:{user_id}"


def invalidation_channel(prefix: str) -> str:
    """The pub/sub channel on which the identity provider announces changes."""
    return f"{prefix}:invalidate"


def _freeze(value: Any, where: str) -> Any:
    """Return an immutable copy of a JSON value (dicts become read-only, lists tuples)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DecodeError(f"{where}: non-finite number")
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, where) for v in value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise DecodeError(f"{where}: keys must be strings")
            out[k] = _freeze(v, f"{where}.{k}")
        return MappingProxyType(out)
    raise DecodeError(f"{where}: {type(value).__name__} is not a JSON value")


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    return value


def _names(values: Iterable[object], what: str) -> tuple[str, ...]:
    if isinstance(values, (str, bytes)):
        raise DecodeError(f"{what} must be a list of strings, not a string")
    out = set()
    for v in values:
        if not isinstance(v, str) or not v or len(v) > 128:
            raise DecodeError(f"{what} must be non-empty strings of at most 128 characters")
        out.add(v)
    return tuple(sorted(out))


@dataclass(frozen=True)
class UserAttributes:
    """What one user may do in one service: roles, permissions and free-form attributes.

    Immutable: roles and permissions are sorted tuples, ``attributes`` a read-only mapping.
    ``version`` increases with every change at the identity provider; ``fetched_at`` is the
    Unix time the identity provider built the value.
    """

    user_id: int | str
    service_name: str
    roles: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    version: int = 0
    fetched_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "user_id", validate_user_id(self.user_id))
        set_(self, "service_name", validate_service_name(self.service_name))
        set_(self, "roles", _names(self.roles, "roles"))
        set_(self, "permissions", _names(self.permissions, "permissions"))
        if not isinstance(self.attributes, Mapping):
            raise DecodeError("attributes must be a JSON object")
        set_(self, "attributes", _freeze(self.attributes, "attributes"))
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 0:
            raise DecodeError("version must be a non-negative integer")
        if not isinstance(self.fetched_at, (int, float)) or isinstance(self.fetched_at, bool):
            raise DecodeError("fetched_at must be a number")
        set_(self, "fetched_at", float(self.fetched_at))

    def has_role(self, *roles: str) -> bool:
        """True when the user holds any of ``roles``."""
        return any(r in self.roles for r in roles)

    def has_permission(self, *permissions: str) -> bool:
        """True when the user holds every one of ``permissions``."""
        return all(p in self.permissions for p in permissions)

    def get(self, name: str, default: Any = None) -> Any:
        """The attribute ``name``, or ``default`` when the user does not have it."""
        return self.attributes.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-ready dict, including the schema version."""
        return {
            "schema": SCHEMA_VERSION,
            "user_id": self.user_id,
            "service_name": self.service_name,
            "roles": list(self.roles),
            "permissions": list(self.permissions),
            "attributes": _thaw(self.attributes),
            "version": self.version,
            "fetched_at": self.fetched_at,
        }

    def to_json(self) -> str:
        """The canonical JSON encoding stored in Redis and sent by the identity provider."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: object) -> UserAttributes:
        """Build from a decoded JSON object, validating every field; raises :class:`DecodeError`."""
        if not isinstance(data, dict):
            raise DecodeError("attributes value must be a JSON object")
        if data.get("schema") != SCHEMA_VERSION:
            raise DecodeError(f"unsupported schema version {data.get('schema')!r}")
        missing = {"user_id", "service_name", "roles", "permissions", "attributes"} - data.keys()
        if missing:
            raise DecodeError(f"attributes value lacks {', '.join(sorted(missing))}")
        for name in ("roles", "permissions"):
            if not isinstance(data[name], list):
                raise DecodeError(f"{name} must be a list")
        try:
            return cls(
                user_id=data["user_id"],
                service_name=data["service_name"],
                roles=data["roles"],
                permissions=data["permissions"],
                attributes=data["attributes"],
                version=data.get("version", 0),
                fetched_at=data.get("fetched_at", 0.0),
            )
        except InvalidKeyPart as exc:
            raise DecodeError(str(exc)) from exc

    @classmethod
    def from_json(cls, raw: str | bytes) -> UserAttributes:
        """Decode :meth:`to_json` output; anything else raises :class:`DecodeError`."""
        if len(raw) > MAX_VALUE_BYTES:
            raise DecodeError("attributes value too large")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(f"attributes value is not JSON: {exc}") from exc
        return cls.from_dict(data)


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
        if not isinstance(kid, str) or not _NAME_RE.fullmatch(kid.strip()):
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


@dataclass(frozen=True)
class Invalidation:
    """A change announced on the invalidation channel.

    ``service_name`` of ``None`` means every service of that user (an attribute change or a
    deactivation). ``version`` is the new version, when there is one.
    """

    user_id: int | str
    service_name: str | None = None
    version: int | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": SCHEMA_VERSION,
                "user_id": self.user_id,
                "service_name": self.service_name,
                "version": self.version,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Invalidation:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(f"invalidation is not JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
            raise DecodeError("invalidation has no supported schema version")
        service = data.get("service_name")
        version = data.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise DecodeError("invalidation version must be an integer")
        try:
            return cls(
                user_id=validate_user_id(data.get("user_id")),
                service_name=None if service is None else validate_service_name(service),
                version=version,
            )
        except InvalidKeyPart as exc:
            raise DecodeError(str(exc)) from exc


class StoreResult(enum.Enum):
    """What :func:`write_attributes` did to the key."""

    #: A valid entry with a newer version was there and was kept (nothing written).
    KEPT_NEWER = 0
    #: The value was written over nothing, an older version or the same version.
    WRITTEN = 1
    #: The value was written over a corrupt entry: one that did not decode as a value of this
    #: schema with an integer version, had no TTL, or was ahead of the writer's authority.
    REPAIRED = 2

    @property
    def landed(self) -> bool:
        """True when the value just written is now the one in Redis."""
        return self is not StoreResult.KEPT_NEWER


# Set the key unless it holds a valid entry with a strictly newer version, so a slow writer never
# replaces a newer value with an older one. A value that is not an entry of this schema with a
# non-negative integer version (below 2**53, where Lua numbers stop being exact), or that has no
# TTL, is corrupt: nobody can trust its version, so it is overwritten and reported (return 2).
# ARGV[4], when not empty, is the writer's authority: the newest version that exists (the
# identity provider's database). A version ahead of it was never issued, so it is corrupt too.
# One key per call, so it runs on Redis Cluster too.
_STORE_IF_NEWER = """
local cur = redis.call('GET', KEYS[1])
local result = 1
if cur then
  local ok, obj = pcall(cjson.decode, cur)
  local v = nil
  if ok and type(obj) == 'table' and obj['schema'] == tonumber(ARGV[5]) and
     type(obj['roles']) == 'table' and type(obj['permissions']) == 'table' and
     type(obj['attributes']) == 'table' and type(obj['version']) == 'number' then
    v = obj['version']
  end
  if v == nil or v ~= v or v < 0 or v > 9007199254740991 or v ~= math.floor(v) then
    result = 2
  elseif redis.call('PTTL', KEYS[1]) < 0 then
    result = 2
  elseif v > tonumber(ARGV[3]) then
    if ARGV[4] ~= '' and v > tonumber(ARGV[4]) then
      result = 2
    else
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return result
"""


def write_attributes(
    client: Any,
    attrs: UserAttributes,
    ttl: int,
    prefix: str,
    *,
    authority: int | None = None,
    keys: ValueKeys | None = None,
) -> StoreResult:
    """Write ``attrs`` with ``ttl`` seconds unless Redis holds a valid, newer version.

    An equal version is overwritten (the value is rebuilt from the same data, only
    ``fetched_at`` differs), so after :attr:`StoreResult.landed` the value in Redis is this one.

    :param authority: the newest version that can exist for this entry, when the writer knows it
        (the identity provider passes its database's current version while it holds the user's
        row lock). A stored version above it is treated as corrupt and overwritten.
    :param keys: value-signing keys; the value is signed with the first (:func:`encode_value`).
    """
    key = attributes_key(prefix, attrs.service_name, attrs.user_id)
    raw = client.eval(
        _STORE_IF_NEWER,
        1,
        key,
        encode_value(attrs, keys),
        int(ttl),
        attrs.version,
        "" if authority is None else int(authority),
        SCHEMA_VERSION,
    )
    return StoreResult(int(raw))


# Set the key only if it still holds exactly ARGV[1]: replaces one value known to be bad without
# racing a writer that replaced it meanwhile.
_REPLACE_IF_UNCHANGED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


def replace_if_unchanged(
    client: Any,
    attrs: UserAttributes,
    ttl: int,
    prefix: str,
    expected: bytes,
    keys: ValueKeys | None = None,
) -> bool:
    """Overwrite the entry with ``attrs`` only if it still holds exactly ``expected``.

    For a writer that proved the stored value bad by other means (a bad signature), after
    :func:`write_attributes` kept it as newer. ``True`` when replaced.
    """
    key = attributes_key(prefix, attrs.service_name, attrs.user_id)
    return bool(
        client.eval(_REPLACE_IF_UNCHANGED, 1, key, expected, encode_value(attrs, keys), int(ttl))
    )


def store_attributes(
    client: Any, attrs: UserAttributes, ttl: int, prefix: str, keys: ValueKeys | None = None
) -> bool:
    """Write ``attrs`` with ``ttl`` seconds unless Redis holds a newer version.

    Returns ``True`` when written (over a corrupt entry too), ``False`` when a newer value was
    kept. See :func:`write_attributes`.
    """
    return write_attributes(client, attrs, ttl, prefix, keys=keys).landed


def publish_invalidation(client: Any, message: Invalidation, prefix: str) -> int:
    """Announce a change to every service process; returns the number of receivers."""
    return int(client.publish(invalidation_channel(prefix), message.to_json()))


#: The SHA-1 under which Redis caches :data:`_STORE_IF_NEWER` (``EVALSHA`` sends this, not the
#: script's text, with every value of a batch).
_STORE_IF_NEWER_SHA = hashlib.sha1(_STORE_IF_NEWER.encode()).hexdigest()  # noqa: S324 - Redis's id


def write_attributes_batch(
    client: Any,
    entries: Sequence[tuple[UserAttributes, int]],
    prefix: str,
    *,
    keys: ValueKeys | None = None,
) -> list[StoreResult]:
    """Write many values in one pipeline, each as :func:`write_attributes` would (same script).

    :param entries: ``(value, ttl in seconds)`` pairs: each key may get its own TTL.
    :returns: one :class:`StoreResult` per entry, in order.

    The pipeline is not a transaction (on Redis Cluster it is split by slot, so there could be
    none); each entry is one ``EVALSHA`` of the compare-and-set script, so a batch never replaces
    a newer value. The script is loaded only when Redis answers ``NOSCRIPT`` (first use, or after
    a restart or ``SCRIPT FLUSH``), and the entries that got that answer are sent again. Any
    other error an entry got is raised, after the rest of the batch was written.
    """
    results: list[Any] = [None] * len(entries)
    pending = list(range(len(entries)))
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        for index in pending:
            attrs, ttl = entries[index]
            # Through execute_command: redis-py's cluster pipeline refuses its evalsha() helper
            # (it cannot load scripts on its own), but routes the command by its key like any
            # other; NOSCRIPT is handled here instead.
            pipe.execute_command(
                "EVALSHA",
                _STORE_IF_NEWER_SHA,
                1,
                attributes_key(prefix, attrs.service_name, attrs.user_id),
                encode_value(attrs, keys),
                int(ttl),
                attrs.version,
                "",
                SCHEMA_VERSION,
            )
        answers = pipe.execute(raise_on_error=False) if pending else []
        missing = []
        for index, answer in zip(pending, answers, strict=True):
            if isinstance(answer, NoScriptError) and attempt == 0:
                missing.append(index)
            results[index] = answer
        if not missing:
            break
        client.script_load(_STORE_IF_NEWER)
        pending = missing
    for answer in results:
        if isinstance(answer, Exception):
            raise answer
    return [StoreResult(int(answer)) for answer in results]

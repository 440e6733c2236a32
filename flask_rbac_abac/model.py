"""The domain model: what one user may do in one service, and the change announcements.

:class:`UserAttributes` (roles, permissions, attributes, version) and :class:`Invalidation` (a
change announced on the invalidation channel), their canonical JSON form, and the validators of
their identifying parts (service names and user ids, which also end up inside Redis keys; see
:mod:`.keys`). Pure data: this module performs no I/O and imports no Redis, HTTP or Flask (an
import-linter contract keeps it so). Values are JSON with a schema version; nothing here ever
unpickles. How a value is stored (signed or not) is :mod:`.codec`'s job; where, :mod:`.keys`
and :mod:`.store`'s.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import DecodeError, InvalidKeyPart

#: Bumped whenever the JSON layout of :class:`UserAttributes` changes incompatibly.
SCHEMA_VERSION = 1
#: Values larger than this are refused on decode (a guard against a poisoned key).
MAX_VALUE_BYTES = 256 * 1024

#: The alphabet of names that end up inside keys (service names, the key prefix, value-key ids):
#: no ``:`` (the key delimiter) and no glob character.
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_USER_RE = re.compile(r"[A-Za-z0-9_.@-]{1,128}")
_MAX_USER_ID = 2**63 - 1


def validate_service_name(name: object) -> str:
    """Return ``name`` if it is safe inside a key: 1-64 of ``A-Z a-z 0-9 _ . -``."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidKeyPart(
            f"invalid service_name {name!r}: expected 1-64 characters from A-Z a-z 0-9 _ . -"
        )
    return name


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


@dataclass(frozen=True)
class Invalidation:
    """A change announced on the invalidation channel.

    ``service_name`` of ``None`` means every service of that user (an attribute change or a
    deactivation). ``version`` is the new version, when there is one. ``gone``: the user has no
    value in ``service_name`` any more (no role left there, or inactive), so a process may deny
    without asking the IdP (until any later change of that key).
    """

    user_id: int | str
    service_name: str | None = None
    version: int | None = None
    gone: bool = False

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "user_id": self.user_id,
            "service_name": self.service_name,
            "version": self.version,
        }
        if self.gone:
            data["gone"] = True  # absent otherwise: a message older processes read unchanged
        return json.dumps(data, separators=(",", ":"))

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
                gone=data.get("gone") is True and service is not None,
            )
        except InvalidKeyPart as exc:
            raise DecodeError(str(exc)) from exc

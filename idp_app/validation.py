"""Request body parsing and field validation; every failure is a 400 :class:`ApiError`."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

from flask import request

from flask_rbac_abac.shared import InvalidKeyPart, validate_service_name

from .errors import ApiError

MAX_USER_ID = 2**63 - 1
MAX_ATTRIBUTES_BYTES = 32 * 1024
MAX_ROLES = 256
MAX_ATTRIBUTES_DEPTH = 16
_USERNAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_NAME_RE = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces


def json_object() -> dict[str, Any]:
    """The request body as a JSON object, or a 400 (never a 500, whatever was sent)."""
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
    if not raw:
        raise ApiError(400, "request body must be a JSON object")
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
        # "\ud800" parses, but a lone surrogate cannot be stored or encoded anywhere.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError, UnicodeError):
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _depth(value: object, limit: int) -> int:
    if limit < 0:
        raise ApiError(400, f"attributes must not nest deeper than {MAX_ATTRIBUTES_DEPTH} levels")
    if isinstance(value, dict):
        return 1 + max((_depth(v, limit - 1) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v, limit - 1) for v in value), default=0)
    return 0


#: Past this a JSON number written with a fraction (``7.0``) no longer spells one integer exactly.
MAX_EXACT_FLOAT = 2**53


def user_id(value: object) -> int:
    """A user id from a JSON body: an integer from 1 to 2**63-1; anything else is a 400 with code
    ``invalid_user_id``.

    JSON has one number type, and JSON Schema (so the OpenAPI document) counts ``7.0`` as the
    integer 7; it is accepted as 7 while a float can spell it exactly (below 2**53). The code lets
    a service tell "no such user can exist here" (a string id from its own identity loader) from
    a malformed request, and remember that user as unknown.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) < MAX_EXACT_FLOAT:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_USER_ID:
        raise ApiError(400, "user_id must be an integer between 1 and 2**63-1", "invalid_user_id")
    return value


def service_name(value: object) -> str:
    try:
        return validate_service_name(value)
    except InvalidKeyPart as exc:
        raise ApiError(400, str(exc)) from None


def username(value: object) -> str:
    if not isinstance(value, str) or not _USERNAME_RE.fullmatch(value):
        raise ApiError(400, "username must be 1-64 characters from A-Z a-z 0-9 _ . @ -")
    return value


def password(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 1024:
        raise ApiError(400, "password must be a string of 1-1024 characters")
    return value


def name(value: object, what: str) -> str:
    """A role or permission: 1-128 printable ASCII characters without spaces."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ApiError(400, f"{what} must be 1-128 printable characters without spaces")
    return value


def names(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_ROLES:
        raise ApiError(400, f"{what} must be a list of at most {MAX_ROLES} strings")
    return sorted({name(v, what) for v in value})


def manifest(value: object) -> dict[str, list[str]]:
    """``{"role": ["permission", ...]}``, normalised to sorted, duplicate-free lists."""
    if not isinstance(value, dict) or len(value) > MAX_ROLES:
        raise ApiError(400, f"roles must be an object of at most {MAX_ROLES} roles")
    return {name(role, "role"): names(perms, "permissions") for role, perms in value.items()}


def visible_attributes(value: object) -> list[str] | None:
    """A service's ``"attributes"``: ``null`` (all) or a list of attribute names, deduplicated.

    An empty list is allowed: the service then sees roles and permissions only.
    """
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_ROLES:
        raise ApiError(
            400, f"attributes must be null or a list of at most {MAX_ROLES} attribute names"
        )
    for index, item in enumerate(value):
        if not isinstance(item, str) or not 1 <= len(item) <= 128:
            raise ApiError(
                400, f"attributes[{index}] must be an attribute name of 1-128 characters"
            )
    return sorted(set(value))


def attributes(value: object) -> dict[str, Any]:
    """A JSON object of attributes that encodes to at most 32 KiB."""
    if not isinstance(value, dict):
        raise ApiError(400, "attributes must be a JSON object")
    for key in value:
        if not isinstance(key, str) or not 1 <= len(key) <= 128:
            raise ApiError(400, "attribute names must be 1-128 characters")
    _depth(value, MAX_ATTRIBUTES_DEPTH)
    check_attributes_size(value)
    return value


def check_attributes_size(value: dict[str, Any]) -> None:
    if len(json.dumps(value, allow_nan=False)) > MAX_ATTRIBUTES_BYTES:
        raise ApiError(400, f"attributes must encode to at most {MAX_ATTRIBUTES_BYTES} bytes")


def only_keys(data: dict[str, Any], allowed: set[str], required: set[str]) -> None:
    missing = required - data.keys()
    if missing:
        raise ApiError(400, f"missing field(s): {', '.join(sorted(missing))}")
    extra = data.keys() - allowed
    if extra:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(extra))}")


#: RFC 3339's ``date-time`` (what OpenAPI's ``format: date-time`` means): a date, ``T``, a time
#: with optional fractions of a second and a mandatory offset.
_DATE_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)


def date_time(value: object, what: str) -> float:
    """An RFC 3339 date-time with an offset (``2026-11-26T08:00:00Z``) as Unix time."""
    problem = f"{what} must be an ISO 8601 date-time with a timezone, like 2026-11-26T08:00:00Z"
    match = _DATE_TIME_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ApiError(400, problem)
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    # RFC 3339 allows a leap second (:60); Python's datetime does not, and it is one second.
    text = f"{year}-{month}-{day}T{hour}:{minute}:{min(int(second), 59):02d}"
    if fraction:
        text += "." + fraction[:6].ljust(6, "0")
    text += "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError):
        raise ApiError(400, problem) from None


#: The largest page a listing returns, and the page when ``limit`` is left out.
MAX_PAGE = 200
DEFAULT_PAGE = 50
_ALLOWED_QUERY_CHARS = re.compile(r"[\x20-\x7e]{0,64}")


def query_args(allowed: set[str]) -> dict[str, str]:
    """The query string, each parameter at most once, only ``allowed`` ones (else a 400)."""
    out: dict[str, str] = {}
    for key, values in request.args.lists():
        if key not in allowed:
            raise ApiError(400, f"unknown query parameter {key!r}")
        if len(values) != 1:
            raise ApiError(400, f"{key} must be given at most once")
        out[key] = values[0]
    return out


def page_limit(value: str | None) -> int:
    """``limit``: 1 to :data:`MAX_PAGE`, default :data:`DEFAULT_PAGE`."""
    if value is None:
        return DEFAULT_PAGE
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_PAGE:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_PAGE}")
    return int(value)


def flag(value: str | None, what: str) -> bool | None:
    """``true`` or ``false`` (absent: ``None``)."""
    if value is None:
        return None
    if value not in ("true", "false"):
        raise ApiError(400, f"{what} must be true or false")
    return value == "true"


def search_text(value: str | None, what: str) -> str | None:
    """A substring to search for: up to 64 printable ASCII characters."""
    if value is None:
        return None
    if not _ALLOWED_QUERY_CHARS.fullmatch(value):
        raise ApiError(400, f"{what} must be at most 64 printable ASCII characters")
    return value


def cursor(value: str | None) -> str | None:
    """A page cursor as handed out (its content is checked by the listing)."""
    if value is None:
        return None
    if not 1 <= len(value) <= 64 or not value.isascii():
        raise ApiError(400, "cursor is not a cursor from a previous page")
    return value


def query_user_id(value: str | None) -> int | None:
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_USER_ID:
        raise ApiError(400, "user_id must be an integer between 1 and 2**63-1")
    return int(value)


def fields(value: object, known: tuple[str, ...]) -> frozenset[str]:
    """A refresh's ``"fields"``: a non-empty list of the names in ``known``, duplicates allowed."""
    if not isinstance(value, list) or not value:
        raise ApiError(400, f"fields must be a non-empty list of: {', '.join(known)}")
    unknown = sorted({repr(v) for v in value if not isinstance(v, str) or v not in known})
    if unknown:
        raise ApiError(
            400, f"fields: unknown field(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )
    return frozenset(value)

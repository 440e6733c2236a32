"""The writes to Redis that the library's client and the identity provider share.

Both sides write attribute entries and announce changes through these functions only, so the
compare-and-set rule (a valid newer version is never replaced by an older one; a corrupt entry is
overwritten) and the message format hold whoever writes. ``client`` is any redis-py compatible
client (``Redis``, ``RedisCluster``, a Sentinel master, fakeredis); these functions add no
timeouts or retries of their own, so the caller's client settings decide how a failure surfaces
(as redis-py's errors). Every command touches one key, so it runs on Redis Cluster too.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from redis.exceptions import NoScriptError

from .codec import ValueKeys, encode_value
from .keys import attributes_key, invalidation_channel
from .model import SCHEMA_VERSION, Invalidation, UserAttributes


def _sha(script: str) -> str:
    """The SHA-1 under which Redis caches ``script`` (what ``EVALSHA`` sends instead of it)."""
    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis's script id


def _run(client: Any, script: str, key: str, *args: Any) -> Any:
    """Run ``script`` on ``key`` by its SHA-1, loading it only when Redis answers ``NOSCRIPT``.

    Sends the script's id, not its text, with every call: its text is several times the size of
    what it writes. Through ``execute_command``, so a cluster client routes it by its key.
    """
    try:
        return client.execute_command("EVALSHA", _sha(script), 1, key, *args)
    except NoScriptError:
        return client.eval(script, 1, key, *args)


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
    raw = _run(
        client,
        _STORE_IF_NEWER,
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


def delete_attributes(client: Any, prefix: str, service_name: str, user_id: int | str) -> None:
    """Delete one user's entry in one service (one key per command: fine on Redis Cluster)."""
    client.delete(attributes_key(prefix, service_name, user_id))


#: The SHA-1 under which Redis caches :data:`_STORE_IF_NEWER` (``EVALSHA`` sends this, not the
#: script's text, with every value of a batch).
_STORE_IF_NEWER_SHA = _sha(_STORE_IF_NEWER)


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


class PatchResult(enum.Enum):
    """What :func:`patch_attributes` did. Anything but :attr:`PATCHED` wrote nothing, and the
    caller rewrites the entry in full (:func:`write_attributes`) from its source of truth."""

    #: The entry held exactly the previous version and now holds the patched value.
    PATCHED = 1
    #: No entry: nothing to patch (a full write decides whether one belongs there).
    MISSING = 0
    #: The entry holds another version than the expected previous one (a change is missing in
    #: between, or it is already newer): patching it would mix two states.
    OTHER_VERSION = -1
    #: The entry is corrupt (undecodable, another schema, a bad version, no TTL, or signed).
    CORRUPT = -2
    #: The entry holds a value Lua cannot write back exactly (an empty list or object inside
    #: an attribute, which cjson cannot tell apart, or an integer past 2**53).
    UNENCODABLE = -3

    @property
    def patched(self) -> bool:
        return self is PatchResult.PATCHED


# Patch one entry in place: replace roles and permissions, and/or set and remove attributes,
# bump the version and fetched_at, and write it back with a fresh TTL, all in one atomic script.
# It refuses (writing nothing) unless the entry is a valid, unsigned entry of this schema holding
# exactly the expected previous version (ARGV[1]), so a patch only ever applies to the state it
# was computed against. The value is written back in the canonical form of the model's to_json()
# (sorted keys, no spaces) by the encoder below, not by cjson.encode, whose numbers have 14
# significant digits; new values arrive already encoded as JSON text and are spliced in as they
# are. cjson decodes [] and {} alike (Redis 7.0 has no decode_array_with_array_mt), so an entry
# with an empty list or object inside an attribute is refused (-3) and rewritten in full.
#   ARGV[1] previous version, ARGV[2] new version, ARGV[3] schema, ARGV[4] TTL in seconds,
#   ARGV[5] fetched_at (JSON number), ARGV[6] roles (JSON array, '' unchanged),
#   ARGV[7] permissions (JSON array, '' unchanged), ARGV[8] every attribute (JSON object, ''
#   unchanged), ARGV[9] n removed attribute names, then the n names, then (name, JSON value)
#   pairs to set.
_PATCH = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local ok, obj = pcall(cjson.decode, cur)
if not ok or type(obj) ~= 'table' or obj['schema'] ~= tonumber(ARGV[3]) or
   type(obj['roles']) ~= 'table' or type(obj['permissions']) ~= 'table' or
   type(obj['attributes']) ~= 'table' or type(obj['version']) ~= 'number' or
   obj['sig'] ~= nil then
  return -2
end
local v = obj['version']
if v ~= v or v < 0 or v > 9007199254740991 or v ~= math.floor(v) then return -2 end
if redis.call('PTTL', KEYS[1]) < 0 then return -2 end
if v ~= tonumber(ARGV[1]) then return -1 end

local enc
local function number(x)
  if x ~= x or x == math.huge or x == -math.huge then error('unsafe') end
  if x == math.floor(x) then
    if math.abs(x) > 9007199254740991 then error('unsafe') end
    return string.format('%d', x)
  end
  return string.format('%.17g', x)
end
local function object(t, raw)
  local names = {}
  for k in pairs(t) do
    if type(k) ~= 'string' then error('unsafe') end
    names[#names + 1] = k
  end
  for k in pairs(raw) do
    if t[k] == nil then names[#names + 1] = k end
  end
  table.sort(names)
  local out = {}
  for i, k in ipairs(names) do
    out[i] = cjson.encode(k) .. ':' .. (raw[k] or enc(t[k]))
  end
  return '{' .. table.concat(out, ',') .. '}'
end
enc = function(x)
  local kind = type(x)
  if kind == 'string' then return cjson.encode(x) end
  if kind == 'number' then return number(x) end
  if kind == 'boolean' then return tostring(x) end
  if x == cjson.null then return 'null' end
  if kind ~= 'table' or next(x) == nil then error('unsafe') end
  if type(next(x)) == 'number' then
    local out = {}
    for i = 1, #x do out[i] = enc(x[i]) end
    local n = 0
    for _ in pairs(x) do n = n + 1 end
    if n ~= #x then error('unsafe') end
    return '[' .. table.concat(out, ',') .. ']'
  end
  return object(x, {})
end
local function list(t)
  if next(t) == nil then return '[]' end
  return enc(t)
end

local attributes = obj['attributes']
if ARGV[8] ~= '' then attributes = {} end
local removed = tonumber(ARGV[9])
for i = 10, 9 + removed do attributes[ARGV[i]] = nil end
local raw = {}
for i = 10 + removed, #ARGV, 2 do
  attributes[ARGV[i]] = nil
  raw[ARGV[i]] = ARGV[i + 1]
end
local built, value = pcall(function()
  local top = {
    attributes = ARGV[8] ~= '' and ARGV[8] or object(attributes, raw),
    fetched_at = ARGV[5],
    permissions = ARGV[7] ~= '' and ARGV[7] or list(obj['permissions']),
    roles = ARGV[6] ~= '' and ARGV[6] or list(obj['roles']),
    schema = ARGV[3],
    service_name = enc(obj['service_name']),
    user_id = enc(obj['user_id']),
    version = ARGV[2],
  }
  for k, x in pairs(obj) do
    if top[k] == nil then top[k] = enc(x) end
  end
  return object({}, top)
end)
if not built then return -3 end
redis.call('SET', KEYS[1], value, 'EX', ARGV[4])
return 1
"""


def _json(value: Any) -> str:
    """A JSON value in the model's canonical form (sorted keys, no spaces, no NaN)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)


def patch_attributes(
    client: Any,
    prefix: str,
    service_name: str,
    user_id: int | str,
    *,
    version: int,
    ttl: int,
    fetched_at: float,
    roles: Sequence[str] | None = None,
    permissions: Sequence[str] | None = None,
    attributes: Mapping[str, Any] | None = None,
    set_attributes: Mapping[str, Any] | None = None,
    remove_attributes: Sequence[str] = (),
) -> PatchResult:
    """Change part of one entry in place, atomically, if it holds exactly ``version - 1``.

    For a change known to touch only some fields (one attribute, one service's roles): the
    writer sends the changed parts instead of a rebuilt value, and needs no read of the rest
    from its database. Roles and permissions, when given, replace the stored ones (``None``
    keeps them); ``attributes``, when given, replace every stored attribute; otherwise
    ``set_attributes`` are set and ``remove_attributes`` removed; ``version`` and
    ``fetched_at`` are set and the TTL starts again. The result decodes as
    :meth:`UserAttributes.from_json` the same as a full rebuild of the new state would.

    Unsigned values only: Lua cannot compute the HMAC of a signed value, so with value-signing
    keys a writer must use :func:`write_attributes`. A refusal (any :class:`PatchResult` but
    ``PATCHED``) writes nothing; the caller then writes the entry in full.
    """
    pairs: list[str] = []
    for name, value in sorted((set_attributes or {}).items()):
        pairs += [name, _json(value)]
    raw = _run(
        client,
        _PATCH,
        attributes_key(prefix, service_name, user_id),
        int(version) - 1,
        int(version),
        SCHEMA_VERSION,
        int(ttl),
        _json(float(fetched_at)),
        "" if roles is None else _json(sorted(set(roles))),
        "" if permissions is None else _json(sorted(set(permissions))),
        "" if attributes is None else _json(dict(attributes)),
        len(remove_attributes),
        *remove_attributes,
        *pairs,
    )
    return PatchResult(int(raw))

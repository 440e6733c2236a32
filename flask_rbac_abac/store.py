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
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

from .codec import ValueKeys, encode_value
from .keys import attributes_key, invalidation_channel
from .model import SCHEMA_VERSION, Invalidation, UserAttributes


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


def delete_attributes(client: Any, prefix: str, service_name: str, user_id: int | str) -> None:
    """Delete one user's entry in one service (one key per command: fine on Redis Cluster)."""
    client.delete(attributes_key(prefix, service_name, user_id))


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

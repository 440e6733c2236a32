"""L1: the in-process cache of decoded attributes.

An entry is *fresh* for ``ttl`` seconds and may be served *stale* for ``max_stale`` more, only when
the identity provider cannot be reached.

Reads take no lock: entries are immutable tuples in an ``OrderedDict``, and one ``get`` on it is
atomic. Writes hold a lock. The dict is kept in the order entries were stored, so the bound
(``maxsize``) drops the oldest first, and entries past ``ttl + max_stale`` are dropped from its
front as new ones arrive (a read never serves them anyway: it checks the age it needs).

Invalidations race with readers: a reader may fetch the old value from Redis just before the
identity provider announces a change, then store it after the eviction. Every eviction therefore
bumps a generation; a reader takes a :meth:`ticket` before it looks further and :meth:`put` refuses
values whose ticket predates an eviction of that key.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import NamedTuple

from cachetools import TTLCache

from .model import UserAttributes

Key = tuple[str, "int | str"]
#: How long a key's eviction generation is remembered; longer than any in-flight lookup.
_GENERATION_MEMORY = 300.0
#: Seconds a user the IdP called unknown (or inactive) is remembered, so a deactivated user's
#: still-valid token costs no IdP call per request; any invalidation of the key ends it sooner.
UNKNOWN_TTL = 5.0


class Ticket(NamedTuple):
    flushes: int
    key_evictions: int
    user_evictions: int


class Entry(NamedTuple):
    """One L1 entry. ``expires``/``limit``/``due`` are the client's (:mod:`.client`) clock
    readings: when the Redis key expires as last seen, when the entry may no longer be extended
    (sliding expiration's max age), and when a read should next look at them (a float compare on
    an L1 hit, never a Redis call). :class:`LocalCache` stores ``due`` no later than the end of
    the entry's freshness, so ``due > now`` alone means "fresh, and nothing to do"."""

    attrs: UserAttributes
    stored_at: float
    expires: float = math.inf
    limit: float = math.inf
    due: float = math.inf


class LocalCache:
    """Thread-safe L1 with fresh/stale windows and eviction generations; reads are lock-free.

    :param maxsize: the most entries kept (least recently used go first).
    :param ttl: seconds an entry is fresh.
    :param max_stale: further seconds an entry may be served when the IdP fails.
    :param timer: the clock, injectable so tests control time.
    """

    def __init__(
        self,
        maxsize: int,
        ttl: float,
        max_stale: float = 0.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_stale = max_stale
        self.maxsize = maxsize
        self._timer = timer
        self._lock = threading.Lock()
        #: Oldest stored first. Written under the lock only, by the methods below; read without
        #: it (``entries.get(key)`` is atomic): the client's L1 hit is that one read.
        self.entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self._entries = self.entries
        self._generations: TTLCache[Hashable, int] = TTLCache(
            maxsize, max(_GENERATION_MEMORY, ttl + max_stale), timer=timer
        )
        self._unknown: TTLCache[Hashable, bool] = TTLCache(
            maxsize, min(ttl, UNKNOWN_TTL), timer=timer
        )
        self._flushes = 0

    def get(self, key: Key) -> UserAttributes | None:
        """The fresh entry for ``key``, or ``None``. No I/O."""
        entry = self.get_entry(key)
        return None if entry is None else entry.attrs

    def get_entry(self, key: Key) -> Entry | None:
        """The fresh entry for ``key`` with its expiry times, or ``None``. No I/O, no lock."""
        entry = self._entries.get(key)
        if entry is not None and self._timer() - entry.stored_at < self.ttl:
            return entry
        return None

    def reschedule(self, key: Key, attrs: UserAttributes, expires: float, due: float) -> None:
        """Record a new Redis expiry and next look of ``key``'s entry if it still holds
        ``attrs`` (its freshness in L1 is unchanged)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.attrs is attrs:
                due = min(due, entry.stored_at + self.ttl)
                self._entries[key] = entry._replace(expires=expires, due=due)

    def get_stale(self, key: Key) -> tuple[UserAttributes, float] | None:
        """The entry for ``key`` even past its freshness (within ``max_stale``), with its age."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        age = self._timer() - entry.stored_at
        if age >= self.ttl + self.max_stale:
            return None
        return entry.attrs, age

    def _ticket(self, key: Key) -> Ticket:
        gens = self._generations
        return Ticket(self._flushes, gens.get(key, 0), gens.get(("*", key[1]), 0))

    def ticket(self, key: Key) -> Ticket:
        """Take before reading further tiers; hand back to :meth:`put`."""
        with self._lock:
            return self._ticket(key)

    def put(
        self,
        key: Key,
        attrs: UserAttributes,
        ticket: Ticket,
        expires: float = math.inf,
        limit: float = math.inf,
        due: float = math.inf,
    ) -> bool:
        """Store ``attrs`` unless ``key`` was evicted since ``ticket`` or holds a newer version
        (``expires``, ``limit``, ``due``: see :class:`Entry`)."""
        with self._lock:
            if ticket != self._ticket(key):
                return False
            current = self._entries.get(key)
            if current is not None and current.attrs.version > attrs.version:
                return False
            now = self._timer()
            self._entries[key] = Entry(attrs, now, expires, limit, min(due, now + self.ttl))
            self._entries.move_to_end(key)
            self._unknown.pop(key, None)
            self._trim(now)
            return True

    def _trim(self, now: float) -> None:
        """Drop the oldest entries beyond ``maxsize`` and those past ``ttl + max_stale``."""
        entries = self._entries
        while len(entries) > self.maxsize:
            entries.popitem(last=False)
        horizon = self.ttl + self.max_stale
        while entries:
            oldest = next(iter(entries.values()))
            if now - oldest.stored_at < horizon:
                return
            entries.popitem(last=False)

    def is_unknown(self, key: Key) -> bool:
        """Did the IdP call this user unknown moments ago? No I/O."""
        with self._lock:
            return key in self._unknown

    def put_unknown(self, key: Key, ticket: Ticket) -> bool:
        """Remember that the IdP does not know ``key`` (drops its value), unless it was evicted
        since ``ticket``."""
        with self._lock:
            if ticket != self._ticket(key):
                return False
            self._entries.pop(key, None)
            self._unknown[key] = True
            return True

    def forget(self, key: Key) -> None:
        """Drop ``key`` and remember that the IdP no longer knows it (its ``gone`` message)."""
        with self._lock:
            self._entries.pop(key, None)
            self._generations[key] = self._generations.get(key, 0) + 1
            self._unknown[key] = True

    def evict(self, key: Key, version: int | None = None) -> bool:
        """Drop ``key``, unless it already holds ``version`` or newer; ``True`` when dropped."""
        with self._lock:
            current = self._entries.get(key)
            if version is not None and current is not None and current.attrs.version >= version:
                return False
            self._entries.pop(key, None)
            self._unknown.pop(key, None)
            self._generations[key] = self._generations.get(key, 0) + 1
            return True

    def evict_user(self, user_id: int | str) -> int:
        """Evict ``user_id`` in every service; returns how many entries went."""
        with self._lock:
            keys = [k for k in self._entries if k[1] == user_id]  # type: ignore[index]
            for key in keys:
                del self._entries[key]
            for key in [k for k in list(self._unknown.keys()) if k[1] == user_id]:  # type: ignore[index]
                del self._unknown[key]
            user_key = ("*", user_id)
            self._generations[user_key] = self._generations.get(user_key, 0) + 1
        return len(keys)

    def clear(self) -> None:
        """Drop everything (the invalidation subscriber reconnected: messages may be lost)."""
        with self._lock:
            self._entries.clear()
            self._unknown.clear()
            self._flushes += 1

    def __len__(self) -> int:
        """Entries held, fresh or stale (at most ``maxsize``)."""
        with self._lock:
            self._trim(self._timer())
            return len(self._entries)

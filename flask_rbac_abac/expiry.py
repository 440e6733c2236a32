"""Refresh-ahead and sliding expiration: when a read should do something about an entry's TTL.

Both act on reads, and neither may cost a Redis call per L1 hit. So the client keeps, in each L1
entry (:class:`.local_cache.Entry`), when its Redis key expires as last seen (``expires``), when
sliding may no longer extend it (``limit``: ``RBAC_ABAC_MAX_AGE`` after its ``fetched_at``) and
when a read should next look at them (``due``): an L1 hit compares one float. :class:`Policy`
computes those times; :class:`Extender` batches the TTL extensions of sliding expiration and
sends them from a background thread as a pipeline of ``PEXPIRE`` (one key per command, no
transaction, so it works on one server, Sentinel and Cluster alike).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Warming writes keys with up to 10 % less than the TTL, so an expiry estimated from
#: ``fetched_at + TTL`` may be that much late: it is checked with ``PTTL`` within this margin.
JITTER_MARGIN = 0.1
#: The most seconds between two flushes of pending extensions.
MAX_FLUSH_EVERY = 1.0


@dataclass(frozen=True)
class Policy:
    """The times at which a read acts on an entry, all on the client's monotonic clock.

    :param ttl: the Redis TTL of an entry, in seconds.
    :param ahead: refresh in the background when less than this fraction of ``ttl`` is left.
    :param sliding: reads extend the TTL back to ``ttl``.
    :param interval: seconds between two extensions of one key.
    :param max_age: seconds since ``fetched_at`` past which an entry is not extended and a read
        refreshes it (only with ``sliding``).
    """

    ttl: float
    ahead: float
    sliding: bool
    interval: float
    max_age: float

    @property
    def active(self) -> bool:
        """Does any read need the expiry times at all?"""
        return self.sliding or self.ahead > 0

    def limit(self, fetched_at: float, now: float, wall_now: float) -> float:
        """When sliding stops extending an entry fetched at wall time ``fetched_at``."""
        if not self.sliding:
            return math.inf
        return now + (fetched_at + self.max_age - wall_now)

    def needs_pttl(self, fetched_at: float, wall_now: float) -> bool:
        """Must an L2 read ask Redis for the key's TTL, or is ``fetched_at + ttl`` far enough?"""
        if self.sliding:
            return True  # extensions make the TTL unrelated to fetched_at
        return fetched_at + self.ttl - wall_now < (self.ahead + JITTER_MARGIN) * self.ttl

    def refresh_at(self, expires: float, limit: float) -> float:
        """When a read should start a background refresh (``inf``: never)."""
        if self.ahead <= 0:
            return limit  # past the max age a read refreshes, synchronously
        return min(expires, limit) - self.ahead * self.ttl

    def extend_at(self, expires: float, limit: float) -> float:
        """When a read should extend the TTL (``inf``: never)."""
        if not self.sliding or expires >= limit:
            return math.inf
        return expires - self.ttl + self.interval

    def due(self, expires: float, limit: float) -> float:
        """When a read should next look at the entry."""
        return min(self.refresh_at(expires, limit), self.extend_at(expires, limit), limit)


class Extender:
    """Pending TTL extensions, sent in batches by a background thread.

    :param redis: a redis-py client (``Redis`` or ``RedisCluster``) or fakeredis.
    :param every: seconds between two flushes.
    :param on_error: called with the exception when a flush fails (the batch is dropped: the
        next reads record their extensions again).
    """

    def __init__(
        self, redis: Any, every: float, *, on_error: Callable[[BaseException], None]
    ) -> None:
        self._redis = redis
        self.every = min(every, MAX_FLUSH_EVERY)
        self._on_error = on_error
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def extend(self, name: str, milliseconds: int) -> None:
        """Record that key ``name`` should live ``milliseconds`` more (sent by the next flush)."""
        with self._lock:
            self._pending[name] = milliseconds
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name="rbac-abac-sliding", daemon=True
                )
                self._thread.start()

    def flush(self) -> int:
        """Send every pending extension now, in one pipeline; returns how many were sent."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        try:
            pipe = self._redis.pipeline(transaction=False)
            for name, milliseconds in batch.items():
                pipe.pexpire(name, milliseconds)
            pipe.execute()
        except Exception as exc:  # any failure drops the batch, see on_error
            self._on_error(exc)
            return 0
        return len(batch)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.flush()

    def close(self) -> None:
        """Stop the flusher after sending what is pending."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.every + 1.0)
        self.flush()

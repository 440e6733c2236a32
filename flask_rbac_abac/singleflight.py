"""One refresh per key: :class:`SingleFlight` inside a process, :class:`Lease` across processes.

A miss on a hot key must not send every thread of every process to the identity provider at
once. Inside a process the first caller of a key leads and the others wait for its result
(:class:`SingleFlight`). Across processes the leader takes a short Redis lease (:class:`Lease`):
while another process holds it, its call is the one refresh in flight for the key, and the
others wait for its value in Redis, or fail with it when it failed. A holder killed mid-refresh
delays the next refresh by at most the lease's lifetime, never longer.

Why not redis-py's :class:`redis.lock.Lock`: it would give ``SET NX PX`` and its compare-and-delete
release, but this lease needs two things it lacks. A holder whose refresh failed leaves
:data:`LEASE_FAILED` in the lease for a moment (compare-and-*set* on release), so the processes
waiting on it fail with it instead of each sending the IdP one more call; and a newcomer that
did not wait on that holder may take over such a marker (take if absent *or* equal to it). Both
are a single key per script, so the lease works on one server, Sentinel and Cluster alike.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from .errors import AttributesUnavailable

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: How often Redis is read for the lease holder's result while waiting (seconds).
LEASE_POLL = 0.02
#: What a lease holder whose refresh failed leaves in the lease, and for how long (ms): the
#: processes waiting on it fail with it instead of each sending the IdP one more call.
LEASE_FAILED = "!failed"
LEASE_FAILED_MS = 1000
_FAILED_VALUES = (LEASE_FAILED, LEASE_FAILED.encode())
#: Take the lease if it is free or holds ``ARGV[3]`` (a failure marker the caller may replace).
_TAKE_LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
#: Compare-and-swap, so an expired lease taken by another process is left alone: delete it, or
#: (``ARGV[2]`` set) leave the failure marker in it for ``ARGV[3]`` ms.
_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
"""


class HolderFailed(Exception):
    """The lease holder this caller waited on failed; the caller fails with it."""


class _Flight(Generic[V]):
    """One call in progress that other threads wait on."""

    #: Set by the leader before ``done``, unless ``error`` is.
    result: V

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None


class SingleFlight(Generic[K, V]):
    """Runs ``work`` once per key at a time; concurrent callers of that key share its outcome.

    :param timeout: seconds a follower waits for the leader before giving up with
        :class:`AttributesUnavailable` (the leader's own calls are bounded, so this only fires
        when something is badly wrong).
    :param on_wait: called each time a caller becomes a follower (for a counter).
    """

    def __init__(self, timeout: float, *, on_wait: Callable[[], None] | None = None) -> None:
        self.timeout = timeout
        self._on_wait = on_wait
        self._flights: dict[K, _Flight[V]] = {}
        self._lock = threading.Lock()

    def run(self, key: K, work: Callable[[], V]) -> V:
        """``work()`` if no call for ``key`` is in progress, else that call's result (or error)."""
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            if self._on_wait is not None:
                self._on_wait()
            if not flight.done.wait(self.timeout):
                raise AttributesUnavailable("timed out waiting for a concurrent refresh")
            if flight.error is not None:
                raise flight.error
            return flight.result
        try:
            flight.result = work()
            return flight.result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            flight.done.set()
            with self._lock:
                self._flights.pop(key, None)


class Lease:
    """A short Redis lease on one key, so one process at a time refreshes it.

    :param redis: a redis-py client (``Redis`` or ``RedisCluster``) or fakeredis.
    :param name: the lease's key (:func:`.codec.lease_key`).
    :param ttl: seconds after which the lease expires by itself (a holder that died); also how
        long a waiter waits at most.

    Redis errors propagate; the caller decides what a failing Redis means (refresh without).
    """

    def __init__(self, redis: Any, name: str, *, ttl: float) -> None:
        self._redis = redis
        self.name = name
        self.ttl = ttl
        self._token = uuid.uuid4().hex
        self.held = False

    def acquire_or_wait(
        self, holder_result: Callable[[], tuple[V | None, bool]], *, poll: float = LEASE_POLL
    ) -> V | None:
        """Take the lease (``held`` becomes true, returns ``None``), or wait for its holder.

        While another process holds it, ``holder_result()`` is polled every ``poll`` seconds;
        it returns ``(value or None, redis_ok)``. A value is returned at once; so is ``None``
        when Redis failed. The lease is taken once it is released (an unknown user writes no
        value) or expired (its holder died); ``None`` without it only if it was never seen free
        within ``ttl`` (a clock jump?): the caller refreshes by itself.

        :raises HolderFailed: the holder this waited on failed (it left :data:`LEASE_FAILED`).
        """
        deadline = time.monotonic() + self.ttl
        waited_on_holder = False
        while True:
            # Free, or holding only an earlier failure this call did not wait for: take it.
            replaceable = "" if waited_on_holder else LEASE_FAILED
            if self._redis.eval(
                _TAKE_LEASE, 1, self.name, self._token, int(self.ttl * 1000), replaceable
            ):
                self.held = True
                return None
            if waited_on_holder and self._redis.get(self.name) in _FAILED_VALUES:
                raise HolderFailed(f"the holder of {self.name} failed")
            waited_on_holder = True
            time.sleep(poll)
            value, redis_ok = holder_result()
            if value is not None or not redis_ok:
                return value
            if time.monotonic() >= deadline:
                return None

    def try_acquire(self) -> bool:
        """Take the lease if it is free, never waiting (a background refresh that someone
        else is already doing is skipped); ``True`` when taken."""
        self.held = bool(
            self._redis.eval(_TAKE_LEASE, 1, self.name, self._token, int(self.ttl * 1000), "")
        )
        return self.held

    def release(self, *, failed: bool = False) -> None:
        """Give the lease back if this holder still has it, or (``failed``) leave
        :data:`LEASE_FAILED` in it for :data:`LEASE_FAILED_MS` for the waiters."""
        if not self.held:
            return
        self.held = False
        self._redis.eval(
            _RELEASE_LEASE,
            1,
            self.name,
            self._token,
            LEASE_FAILED if failed else "",
            LEASE_FAILED_MS,
        )

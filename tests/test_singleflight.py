"""SingleFlight (one call per key in a process) and Lease (one refresher per key across them)."""

from __future__ import annotations

import threading
import time

import pytest

from flask_rbac_abac.errors import AttributesUnavailable
from flask_rbac_abac.singleflight import (
    LEASE_FAILED,
    LEASE_FAILED_MS,
    HolderFailed,
    Lease,
    SingleFlight,
)


def test_one_call_per_key_and_followers_share_its_result() -> None:
    waits: list[int] = []
    flight: SingleFlight[str, int] = SingleFlight(5.0, on_wait=lambda: waits.append(1))
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def work() -> int:
        calls.append("a")
        started.set()
        release.wait(5)
        return 42

    results: list[int] = []
    leader = threading.Thread(target=lambda: results.append(flight.run("a", work)))
    leader.start()
    assert started.wait(5)
    followers = [
        threading.Thread(target=lambda: results.append(flight.run("a", work))) for _ in range(3)
    ]
    for thread in followers:
        thread.start()
    deadline = time.monotonic() + 5
    while len(waits) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert flight.run("b", lambda: 7) == 7  # another key does not wait
    release.set()
    for thread in [leader, *followers]:
        thread.join(5)
    assert calls == ["a"]
    assert results == [42, 42, 42, 42]
    assert len(waits) == 3
    assert flight.run("a", lambda: 43) == 43  # finished flights are forgotten


def test_followers_get_the_leaders_error() -> None:
    flight: SingleFlight[str, int] = SingleFlight(5.0)
    started, release = threading.Event(), threading.Event()

    def fail() -> int:
        started.set()
        release.wait(5)
        raise ValueError("the IdP said no")

    errors: list[BaseException] = []

    def call() -> None:
        try:
            flight.run("a", fail)
        except ValueError as exc:
            errors.append(exc)

    leader = threading.Thread(target=call)
    leader.start()
    assert started.wait(5)
    follower = threading.Thread(target=call)
    follower.start()
    time.sleep(0.05)
    release.set()
    leader.join(5)
    follower.join(5)
    assert [str(e) for e in errors] == ["the IdP said no", "the IdP said no"]


def test_a_follower_gives_up_after_its_timeout() -> None:
    flight: SingleFlight[str, int] = SingleFlight(0.05)
    started, release = threading.Event(), threading.Event()

    def slow() -> int:
        started.set()
        release.wait(5)
        return 1

    leader = threading.Thread(target=flight.run, args=("a", slow))
    leader.start()
    assert started.wait(5)
    try:
        with pytest.raises(AttributesUnavailable, match="timed out waiting"):
            flight.run("a", slow)
    finally:
        release.set()
        leader.join(5)


def test_lease_is_taken_once_and_released(backend, key_prefix) -> None:
    name = f"{key_prefix}:lease:s:1"
    first = Lease(backend, name, ttl=5)
    assert first.acquire_or_wait(lambda: (None, True)) is None
    assert first.held is True
    assert 0 < backend.pttl(name) <= 5000
    second = Lease(backend, name, ttl=0.1)
    polls: list[int] = []

    def nothing_yet() -> tuple[str | None, bool]:
        polls.append(1)
        return None, True

    assert second.acquire_or_wait(nothing_yet, poll=0.02) is None
    assert second.held is False and len(polls) >= 2  # never saw it free: gave up, without it
    first.release()
    assert backend.get(name) is None
    second.release()  # not held: nothing to do
    assert second.acquire_or_wait(nothing_yet) is None and second.held  # free now: taken


def test_waiter_returns_the_holders_result(backend, key_prefix) -> None:
    name = f"{key_prefix}:lease:s:1"
    backend.set(name, "another-process", px=5000)
    lease = Lease(backend, name, ttl=5)
    answers = iter([(None, True), ("their value", True)])
    assert lease.acquire_or_wait(lambda: next(answers)) == "their value"
    assert lease.held is False


def test_waiter_stops_when_redis_fails(backend, key_prefix) -> None:
    name = f"{key_prefix}:lease:s:1"
    backend.set(name, "another-process", px=5000)
    lease = Lease(backend, name, ttl=5)
    started = time.monotonic()
    assert lease.acquire_or_wait(lambda: (None, False)) is None
    assert time.monotonic() - started < 2.5 and lease.held is False


def test_a_released_lease_is_taken_by_its_waiter(backend, key_prefix) -> None:
    name = f"{key_prefix}:lease:s:1"
    holder = Lease(backend, name, ttl=5)
    assert holder.acquire_or_wait(lambda: (None, True)) is None
    waiter = Lease(backend, name, ttl=5)
    timer = threading.Timer(0.1, holder.release)  # an unknown user: no value is written
    timer.start()
    try:
        assert waiter.acquire_or_wait(lambda: (None, True)) is None
    finally:
        timer.cancel()
    assert waiter.held is True


def test_waiters_fail_with_a_failed_holder_and_newcomers_try_again(backend, key_prefix) -> None:
    name = f"{key_prefix}:lease:s:1"
    holder = Lease(backend, name, ttl=5)
    assert holder.acquire_or_wait(lambda: (None, True)) is None
    waiter = Lease(backend, name, ttl=5)
    timer = threading.Timer(0.1, holder.release, kwargs={"failed": True})
    timer.start()
    try:
        with pytest.raises(HolderFailed):
            waiter.acquire_or_wait(lambda: (None, True))
    finally:
        timer.cancel()
    assert backend.get(name) in (LEASE_FAILED, LEASE_FAILED.encode())
    assert 0 < backend.pttl(name) <= LEASE_FAILED_MS
    newcomer = Lease(backend, name, ttl=5)  # waited on nobody: takes the marker over
    assert newcomer.acquire_or_wait(lambda: (None, True)) is None and newcomer.held


def test_an_expired_lease_taken_by_another_is_left_alone(backend, key_prefix) -> None:
    name = f"{key_prefix}:lease:s:1"
    for failed in (False, True):
        mine = Lease(backend, name, ttl=5)
        assert mine.acquire_or_wait(lambda: (None, True)) is None
        backend.set(name, "another-process", px=5000)  # as if mine expired and they took it
        mine.release(failed=failed)
        assert backend.get(name) == b"another-process"
        backend.delete(name)

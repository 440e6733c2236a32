"""A revocation survives a Redis stall and an IdP crash: the outbox delivers it by itself.

Real processes: a redis-server of the test's own, stalled with ``CLIENT PAUSE ... ALL`` (it keeps
its data, so the old value with its 24 h TTL is still there when it comes back, and a command that
timed out while paused is dropped, never run late), the IdP and billing_api under gunicorn with 2
workers each. billing_api keeps the default 60 s in-process cache, so a denial
within seconds can only come from the IdP rewriting Redis and publishing the invalidation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.e2e.conftest import E2E

pytestmark = pytest.mark.e2e

StackFactory = Callable[..., E2E]
#: Every worker must deny within this many seconds of Redis answering again.
BOUND = 5.0


@contextmanager
def redis_paused(stack: E2E, seconds: float) -> Iterator[None]:
    """Pause every client of the stack's redis-server for ``seconds``; on exit, wait it out."""
    client = stack.redis_client()
    assert client.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL") == "OK"
    ends = time.monotonic() + seconds
    client.close()
    try:
        yield
    finally:
        time.sleep(max(0.0, ends - time.monotonic()))


def cached_roles(stack: E2E, user_id: int) -> list[str]:
    raw = stack.redis_client().get(stack.key(user_id))
    assert raw is not None
    return list(json.loads(raw)["roles"])


def every_worker_denies_within(stack: E2E, token: str, workers: set[int], since: float) -> float:
    """Seconds from ``since`` until two bursts in a row were 403 from every worker."""
    denied: set[int] = set()
    while time.monotonic() - since < BOUND + 10:
        burst = stack.burst("/stats", token, 16)
        statuses = {status for _, _, status, _ in burst}
        if statuses == {403}:
            denied |= {pid for _, pid, _, _ in burst}
            if denied == workers:
                return time.monotonic() - since
        else:
            denied.clear()
        time.sleep(0.05)
    raise AssertionError(f"workers {workers - denied} still allow after {BOUND + 10} s")


def warm(stack: E2E) -> tuple[str, int, set[int]]:
    """alice (admin) allowed on /stats by both workers, every subscriber connected."""
    alice = stack.token("alice")
    workers = stack.until_every_worker("/stats", alice, lambda status, body: status == 200)
    assert len(workers) == 2
    assert stack.wait_subscribed() == workers
    return alice, stack.user_id(alice), workers


def test_revocation_during_a_redis_stall_reaches_every_worker_by_itself(
    make_stack: StackFactory,
) -> None:
    stack = make_stack()
    alice, uid, workers = warm(stack)

    with redis_paused(stack, 3.0):
        response = stack.admin("PUT", f"/api/users/{uid}/roles/billing_api", {"roles": ["viewer"]})
        assert response.status_code == 200, response.text
        assert response.json()["cached"] is False
        during = stack.admin("GET", "/healthz").json()
    back = time.monotonic()

    took = every_worker_denies_within(stack, alice, workers, back)
    assert took < BOUND, f"took {took:.2f} s"
    assert cached_roles(stack, uid) == ["viewer"]
    assert during["outbox"]["backlog"] == 1
    assert 0 <= during["outbox"]["oldest_age_seconds"] < 5
    health = stack.admin("GET", "/healthz").json()
    assert health["outbox"] == {"ok": True, "backlog": 0, "oldest_age_seconds": None}


def test_idp_killed_between_commit_and_delivery_the_next_idp_delivers(
    make_stack: StackFactory,
) -> None:
    stack = make_stack()
    alice, uid, workers = warm(stack)
    assert stack.idp is not None

    with redis_paused(stack, 6.0):
        response = stack.admin("PUT", f"/api/users/{uid}/roles/billing_api", {"roles": ["viewer"]})
        assert response.status_code == 200, response.text
        assert response.json()["cached"] is False
        stack.idp.kill()  # SIGKILL: the committed change is only in the database now
        assert not stack.idp.alive()

    # Redis is back with the old value (24 h TTL); no IdP runs to fix it.
    time.sleep(1.0)
    assert cached_roles(stack, uid) == ["admin"]
    assert {status for _, _, status, _ in stack.burst("/stats", alice, 8)} == {200}

    started = time.monotonic()
    stack.start_idp()  # answers /healthz: that first request starts its delivery thread
    took = every_worker_denies_within(stack, alice, workers, started)
    assert took < BOUND + 5, f"took {took:.2f} s after starting the IdP"
    assert cached_roles(stack, uid) == ["viewer"]

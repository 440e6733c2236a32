"""Signed values on real processes: a value planted in Redis without the IdP's signature grants
nothing, in any worker, when the IdP and billing_api share ``RBAC_ABAC_VALUE_KEYS``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.e2e.conftest import E2E

pytestmark = pytest.mark.e2e

KEYS = "e2e1:" + "v" * 40


def test_an_unsigned_admin_value_is_a_miss_everywhere(
    make_stack: Callable[..., E2E], monkeypatch: pytest.MonkeyPatch
) -> None:
    idp_env = E2E.idp_env
    monkeypatch.setattr(
        E2E, "idp_env", lambda self: {**idp_env(self), "RBAC_ABAC_VALUE_KEYS": KEYS}
    )
    stack = make_stack(service_config={"RBAC_ABAC_VALUE_KEYS": KEYS})
    bob = stack.token("bob")
    uid = stack.user_id(bob)
    workers = stack.until_every_worker("/whoami", bob, lambda status, body: status == 200)
    assert len(workers) == 2
    # Every worker hears the invalidation below: a subscriber starts at its worker's first
    # request, and one that subscribes after the message misses it (dropping its L1 only once
    # it does subscribe, which nothing below waits for).
    assert stack.wait_subscribed() == workers
    signed = json.loads(stack.redis_client().get(stack.key(uid)))
    assert signed["sig"]["kid"] == "e2e1"

    forged = {k: v for k, v in signed.items() if k != "sig"}
    forged.update(roles=["admin"], version=signed["version"] + 100)
    stack.redis_client().set(stack.key(uid), json.dumps(forged), ex=86400)
    # The workers' L1 still holds the signed value: drop it so they read Redis again.
    stack.redis_client().publish(
        f"{stack.key_prefix}:invalidate",
        json.dumps({"schema": 1, "user_id": uid, "service_name": None, "version": None}),
    )
    time.sleep(1.0)
    for _ in range(4):
        answers = stack.burst("/stats", bob, 16)
        assert {status for _, _, status, _ in answers} == {403}
    assert {pid for _, pid, _, _ in answers} <= workers
    stored = json.loads(stack.redis_client().get(stack.key(uid)))
    assert (stored["roles"], stored["sig"]["kid"]) == (["accountant"], "e2e1")

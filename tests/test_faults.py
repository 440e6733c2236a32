"""Faults at the library level, on the real Redis and real sockets: a silent Redis, a slow IdP,
a refresh-lease holder killed mid-refresh (a real subprocess, SIGKILLed).

The e2e counterparts (billing_api under gunicorn) are in ``tests/e2e/test_faults.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from flask_rbac_abac import AttributesUnavailable, RedisAttributeClient, UserAttributes
from flask_rbac_abac.keys import lease_key
from flask_rbac_abac.store import store_attributes

from .conftest import REDIS_URL, SERVICE
from .faults import Blackhole, SlowIdP
from .servers import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.faults]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole().start()
    yield hole
    hole.stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., RedisAttributeClient]]:
    made: list[RedisAttributeClient] = []

    def make(**kwargs: Any) -> RedisAttributeClient:
        kwargs.setdefault("service_name", SERVICE)
        kwargs.setdefault("invalidation", False)
        client = RedisAttributeClient(**kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def idp_answering(
    real_redis: redis.Redis, key_prefix: str, roles: list[str]
) -> Callable[[dict, dict], Callable[[], tuple[int, dict]]]:
    """An IdP answer that writes Redis through the shared store, as the real IdP does."""

    def answer(body: dict, headers: dict) -> Callable[[], tuple[int, dict]]:
        attrs = UserAttributes(
            user_id=body["user_id"], service_name=body["service_name"], roles=roles, version=1
        )
        store_attributes(real_redis, attrs, 3600, key_prefix)
        return lambda: (200, {"success": True, "attributes": attrs.to_dict()})

    return answer


@pytest.mark.timeout(30)
def test_health_check_answers_at_once_with_redis_and_idp_silent(
    blackhole: Blackhole, clients: Callable[..., RedisAttributeClient]
) -> None:
    client = clients(
        redis_url=blackhole.redis_url,
        identity_provider_url=blackhole.http_url,
        idp_timeout=(0.5, 1.0),
        invalidation=True,
    )
    client.listen()
    for _ in range(10):
        started = time.monotonic()
        report = client.health_check()
        assert time.monotonic() - started < 0.1
        assert report["status"] == "degraded"
        time.sleep(0.2)
    # The probes (each bounded by its own timeout) have now told what they saw.
    assert wait_for(lambda: client.health_check()["redis"] == "degraded", 5)
    assert client.health_check() == {
        "status": "degraded",
        "redis": "degraded",
        "idp": "degraded",
        "subscriber": "degraded",
    }
    # A lookup costs the Redis budget (0.25 s, retried once) plus one IdP call (held to its
    # 1 s read timeout), with a wide margin; and it is a 503, never a grant.
    started = time.monotonic()
    with pytest.raises(AttributesUnavailable):
        client.get_user_attributes(7)
    elapsed = time.monotonic() - started
    print(f"lookup with Redis and the IdP silent: {elapsed:.3f} s")
    assert elapsed < 0.5 + 1.0 + 1.5, f"a lookup waited {elapsed:.3f} s"


@pytest.mark.timeout(60)
def test_lease_holder_killed_mid_refresh_delays_the_next_by_at_most_the_lease(
    real_redis: redis.Redis, key_prefix: str, clients: Callable[..., RedisAttributeClient]
) -> None:
    stuck = SlowIdP(delay=60).start()  # the holder's IdP never answers in time
    fast = SlowIdP(delay=0, answer=idp_answering(real_redis, key_prefix, ["admin"])).start()
    holder_code = (
        "import sys\n"
        "from flask_rbac_abac import RedisAttributeClient\n"
        "c = RedisAttributeClient(sys.argv[1], service_name='billing_api', key_prefix=sys.argv[2],"
        " identity_provider_url=sys.argv[3], invalidation=False)\n"
        "c.get_user_attributes(7)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code, REDIS_URL, key_prefix, stuck.url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        # The holder took the lease and is inside its IdP call: kill it there.
        assert wait_for(lambda: stuck.calls == 1, 20), "the holder never called its IdP"
        lease = lease_key(key_prefix, SERVICE, 7)
        assert real_redis.get(lease) is not None
        holder.send_signal(signal.SIGKILL)
        holder.wait(5)
        lease_left = real_redis.pttl(lease) / 1000
        assert lease_left > 0, "the lease should outlive its killed holder"

        client = clients(redis_url=REDIS_URL, key_prefix=key_prefix, identity_provider_url=fast.url)
        started = time.monotonic()
        attrs = client.get_user_attributes(7)
        elapsed = time.monotonic() - started
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(5)
        stuck.stop()
        fast.stop()
    print(f"lease left at the kill {lease_left:.3f} s; next request {elapsed:.3f} s")
    assert attrs is not None and attrs.roles == ("admin",)
    assert fast.calls == 1
    lease_time = sum(client.idp.timeout) + 1.0
    assert elapsed < lease_time + 1.0, f"the next request waited {elapsed:.3f} s"

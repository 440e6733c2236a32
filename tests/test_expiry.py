"""Refresh-ahead and sliding expiration, on the real Redis with short TTLs and the fake IdP."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from unittest import mock

import pytest
import redis
import responses

from flask_rbac_abac import ConfigurationError, RedisAttributeClient, UserAttributes
from flask_rbac_abac.config import load

from .conftest import IDP, SERVICE, FakeIdP, library_config
from .servers import wait_for

REFRESH = IDP + "/api/refresh-user-cache/"


class SwitchableIdP(FakeIdP):
    """The fake IdP, slowed down or failing on demand, counting its calls."""

    def __init__(self, mock_idp: responses.RequestsMock, client: redis.Redis, prefix: str) -> None:
        super().__init__(responses.RequestsMock(), client, prefix)
        self.delay = 0.0
        self.failing = False
        mock_idp.add_callback("POST", REFRESH, callback=self.answer)

    def answer(self, request):  # type: ignore[no-untyped-def]
        time.sleep(self.delay)
        if self.failing:
            self.requests.append({"body": json.loads(request.body), "failed": True})
            return 500, {}, json.dumps({"success": False, "error": "boom"})
        return self._refresh(request)


@pytest.fixture
def idp(real_redis: redis.Redis, key_prefix: str) -> Iterator[SwitchableIdP]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock_idp:
        yield SwitchableIdP(mock_idp, real_redis, key_prefix)


@pytest.fixture
def make_client(
    real_redis: redis.Redis, key_prefix: str
) -> Iterator[Callable[..., RedisAttributeClient]]:
    made: list[RedisAttributeClient] = []

    def make(**kwargs: object) -> RedisAttributeClient:
        kwargs.setdefault("service_name", SERVICE)
        kwargs.setdefault("identity_provider_url", IDP)
        kwargs.setdefault("key_prefix", key_prefix)
        kwargs.setdefault("invalidation", False)
        kwargs.setdefault("redis", real_redis)
        client = RedisAttributeClient(**kwargs)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def sleep_until(wall_time: float) -> None:
    time.sleep(max(0.0, wall_time - time.time()))


def timed(client: RedisAttributeClient, user_id: int) -> tuple[UserAttributes | None, float]:
    started = time.monotonic()
    got = client.get_user_attributes(user_id)
    return got, time.monotonic() - started


# -- refresh-ahead ---------------------------------------------------------------------------


def test_refresh_ahead_calls_the_idp_once_across_two_clients_in_the_background(
    make_client, idp, real_redis
) -> None:
    ttl = 4
    idp.ttl = ttl
    idp.add(7, roles=["old"])
    first = make_client(ttl=ttl, refresh_ahead=0.25)
    second = make_client(ttl=ttl, refresh_ahead=0.25)
    cached = first.get_user_attributes(7)  # a miss: the IdP writes the entry
    assert cached is not None and cached.roles == ("old",)
    assert second.get_user_attributes(7) == cached  # an L2 hit
    assert len(idp.requests) == 1
    key = first.key(7)

    idp.add(7, roles=["new"])
    idp.delay = 0.5  # a slow IdP: a request that waited for it would show
    sleep_until(cached.fetched_at + ttl * 0.8)  # past 75 % of the TTL
    for client in (first, second):
        got, seconds = timed(client, 7)
        assert got == cached  # answered from the cache,
        assert seconds < 0.3  # at once
    assert wait_for(lambda: len(idp.requests) == 2, seconds=5)
    assert wait_for(lambda: real_redis.pttl(key) > (ttl - 1) * 1000, seconds=2)  # full again
    # Both clients saw the entry due; the second one finds the refresh done and makes no call.
    assert wait_for(lambda: second.get_user_attributes(7).roles == ("new",), seconds=3)
    assert wait_for(lambda: first.get_user_attributes(7).roles == ("new",), seconds=3)
    time.sleep(0.3)
    assert len(idp.requests) == 2
    assert first.stats()["refresh_ahead"] + second.stats()["refresh_ahead"] == 1
    assert first.stats()["auto_refreshes"] == 1 and second.stats()["auto_refreshes"] == 0


def test_a_failed_refresh_ahead_changes_nothing(make_client, idp, real_redis) -> None:
    ttl = 4
    idp.ttl = ttl
    idp.add(7, roles=["kept"])
    client = make_client(ttl=ttl, refresh_ahead=0.25)
    cached = client.get_user_attributes(7)
    assert cached is not None
    key = client.key(7)
    stored = real_redis.get(key)

    idp.failing = True
    sleep_until(cached.fetched_at + ttl * 0.8)
    got, seconds = timed(client, 7)
    assert got == cached and seconds < 0.3
    assert wait_for(lambda: len(idp.requests) == 2, seconds=5)
    assert wait_for(lambda: client.stats()["idp_errors"] == 1, seconds=2)
    assert client.get_user_attributes(7) == cached  # the response,
    assert real_redis.get(key) == stored  # Redis's value
    assert 0 < real_redis.pttl(key) < ttl * 0.25 * 1000  # and its TTL are as they were
    assert client.local.get((SERVICE, 7)) == cached
    assert client.stats()["refresh_ahead"] == 0


def test_refresh_ahead_skips_a_key_whose_lease_is_held(make_client, idp, real_redis) -> None:
    """Another process's refresh (its lease) in flight: this one does not call the IdP."""
    from flask_rbac_abac.keys import lease_key

    ttl = 4
    idp.ttl = ttl
    idp.add(7)
    client = make_client(ttl=ttl, refresh_ahead=0.25)
    cached = client.get_user_attributes(7)
    assert cached is not None
    real_redis.set(lease_key(client.key_prefix, SERVICE, 7), "someone-else", px=10_000)
    sleep_until(cached.fetched_at + ttl * 0.8)
    assert client.get_user_attributes(7) == cached
    time.sleep(0.5)
    assert len(idp.requests) == 1 and client.stats()["refresh_ahead"] == 0


# -- sliding expiration ----------------------------------------------------------------------


def test_sliding_expiration_keeps_a_read_key_and_lets_an_unread_one_expire(
    make_client, real_redis
) -> None:
    ttl = 2
    client = make_client(ttl=ttl, refresh_ahead=0, sliding_expiration=True, sliding_interval=0.2)
    for user in (7, 8):
        assert client.set_user_attributes(UserAttributes(user_id=user, service_name=SERVICE))
    deadline = time.monotonic() + ttl * 1.75
    while time.monotonic() < deadline:
        assert client.get_user_attributes(7, auto_refresh=False) is not None
        time.sleep(0.05)
    assert real_redis.exists(client.key(7)) == 1  # read regularly: outlived its TTL
    assert real_redis.pttl(client.key(7)) > (ttl - 0.6) * 1000
    assert real_redis.exists(client.key(8)) == 0  # never read: expired
    assert client.stats()["l1_hits"] > 20


def test_sliding_l1_hit_makes_no_redis_call(make_client, real_redis) -> None:
    client = make_client(ttl=2, sliding_expiration=True, sliding_interval=0.2)
    assert client.set_user_attributes(UserAttributes(user_id=7, service_name=SERVICE))
    time.sleep(0.3)  # an extension is due: the hit records it in memory only
    with mock.patch.object(real_redis, "get", side_effect=AssertionError("Redis was called")):
        with mock.patch.object(real_redis, "execute_command", side_effect=AssertionError("I/O")):
            with mock.patch.object(real_redis, "pipeline", side_effect=AssertionError("pipe")):
                client.extender.every = 3600.0  # no flush meanwhile
                assert client.get_user_attributes(7) is not None
    assert client.stats()["l1_hits"] == 1
    assert client.extender.flush() == 1  # the extension, sent later in one pipeline
    assert real_redis.pttl(client.key(7)) > 1800


def test_sliding_never_extends_past_max_age_and_then_refreshes(
    make_client, idp, real_redis
) -> None:
    ttl = 2
    idp.ttl = ttl
    idp.add(7, roles=["first"])
    client = make_client(
        ttl=ttl, refresh_ahead=0, sliding_expiration=True, sliding_interval=0.2, max_age=3
    )
    first = client.get_user_attributes(7)
    assert first is not None and len(idp.requests) == 1
    limit = first.fetched_at + 3
    sleep_until(first.fetched_at + 1.2)
    assert client.get_user_attributes(7) == first
    assert client.extender.flush() == 1
    # Extended up to the max age (past its first TTL), not to a full TTL from now.
    left = (limit - time.time()) * 1000
    assert left - 300 <= real_redis.pttl(client.key(7)) <= left + 50
    idp.add(7, roles=["second"])
    while time.time() < limit + 0.3:
        got = client.get_user_attributes(7)
        assert got is not None
        time.sleep(0.05)
    assert got.roles == ("second",) and got.fetched_at > first.fetched_at
    assert len(idp.requests) == 2  # refreshed once, however often it was read
    assert client.stats()["auto_refreshes"] == 2


# -- configuration ---------------------------------------------------------------------------


def test_configuration_of_refresh_ahead_and_sliding(key_prefix) -> None:
    from flask import Flask

    app = Flask(__name__)
    app.config.update(library_config(key_prefix))
    settings = load(app.config)
    assert settings.refresh_ahead == 0.1
    assert settings.sliding_expiration is False and settings.sliding_interval is None
    assert settings.max_age == 7 * 86400
    app.config.update(
        RBAC_ABAC_REFRESH_AHEAD="0",
        RBAC_ABAC_SLIDING_EXPIRATION="true",
        RBAC_ABAC_SLIDING_INTERVAL="30",
        RBAC_ABAC_MAX_AGE=3600,
    )
    settings = load(app.config)
    assert settings.refresh_ahead == 0.0 and settings.sliding_expiration is True
    assert settings.sliding_interval == 30.0 and settings.max_age == 3600


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("RBAC_ABAC_REFRESH_AHEAD", 1.5, "RBAC_ABAC_REFRESH_AHEAD must be a fraction in [0, 1)"),
        ("RBAC_ABAC_REFRESH_AHEAD", "x", "RBAC_ABAC_REFRESH_AHEAD must be a fraction in [0, 1)"),
        ("RBAC_ABAC_SLIDING_EXPIRATION", "maybe", "RBAC_ABAC_SLIDING_EXPIRATION must be a"),
        ("RBAC_ABAC_SLIDING_INTERVAL", -1, "RBAC_ABAC_SLIDING_INTERVAL must be a positive"),
        ("RBAC_ABAC_MAX_AGE", 0, "RBAC_ABAC_MAX_AGE must be a positive integer"),
    ],
)
def test_bad_configuration_names_the_key(key_prefix, key, value, message) -> None:
    config = library_config(key_prefix, **{key: value})
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        load(config)


# -- the pieces ------------------------------------------------------------------------------


def test_policy_times() -> None:
    import math

    from flask_rbac_abac.expiry import Policy

    off = Policy(ttl=100, ahead=0, sliding=False, interval=10, max_age=1000)
    assert not off.active and off.due(expires=150, limit=math.inf) == math.inf
    ahead = Policy(ttl=100, ahead=0.1, sliding=False, interval=10, max_age=1000)
    assert ahead.due(expires=150, limit=math.inf) == 140  # 10 % of the TTL before the end
    assert ahead.limit(fetched_at=5.0, now=50, wall_now=10.0) == math.inf  # no sliding, no cap
    assert not ahead.needs_pttl(fetched_at=0.0, wall_now=50.0)  # fetched_at says: far from end
    assert ahead.needs_pttl(fetched_at=0.0, wall_now=81.0)  # near it (jitter margin included)
    sliding = Policy(ttl=100, ahead=0.1, sliding=True, interval=10, max_age=1000)
    assert sliding.limit(fetched_at=5.0, now=50, wall_now=10.0) == 1045
    assert sliding.needs_pttl(fetched_at=0.0, wall_now=1.0)
    assert sliding.due(expires=150, limit=1045) == 60  # next extension: one interval later
    assert sliding.due(expires=1045, limit=1045) == 1035  # capped: refresh ahead of the max age


def test_lease_try_acquire_never_waits(real_redis, key_prefix) -> None:
    from flask_rbac_abac.singleflight import LEASE_FAILED, Lease

    name = f"{key_prefix}:lease:test"
    first, second = Lease(real_redis, name, ttl=5), Lease(real_redis, name, ttl=5)
    assert first.try_acquire() is True and first.held
    started = time.monotonic()
    assert second.try_acquire() is False and not second.held
    assert time.monotonic() - started < 0.5
    first.release(failed=True)  # a failure marker is not taken over by a background refresh
    assert real_redis.get(name) == LEASE_FAILED.encode()
    assert second.try_acquire() is False
    real_redis.delete(name)
    assert second.try_acquire() is True
    second.release()
    assert real_redis.get(name) is None

"""RedisAttributeClient's lookup path on fakeredis with controlled clocks: the expiry times a
read records, refresh-ahead and sliding expiration as a read triggers them, and the counters,
Redis writes and IdP calls of each branch (fast: part of the mutation run, see setup.cfg)."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Iterator
from unittest import mock

import fakeredis
import pytest
import responses
from redis.exceptions import ConnectionError as RedisConnectionError

from flask_rbac_abac import IdentityProviderError, RedisAttributeClient, UserAttributes, signals
from flask_rbac_abac.codec import decode_value
from flask_rbac_abac.errors import DecodeError
from flask_rbac_abac.keys import lease_key
from flask_rbac_abac.metrics import PREFIX, PrometheusMetrics
from flask_rbac_abac.model import Invalidation
from flask_rbac_abac.singleflight import LEASE_FAILED
from flask_rbac_abac.store import store_attributes

from .conftest import IDP, SERVICE, FakeIdP
from .servers import wait_for

REFRESH = IDP + "/api/refresh-user-cache/"
#: The wall clock's reading when a test starts (any fixed time).
WALL = 1_700_000_000.0


class Clocks:
    """A monotonic clock and a wall clock moved together by :meth:`advance`."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall_now = WALL

    def timer(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall_now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall_now += seconds


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def redis(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def idp(redis: fakeredis.FakeRedis, key_prefix: str) -> Iterator[FakeIdP]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeIdP(mock, redis, key_prefix, ttl=100)


@pytest.fixture
def make_client(
    redis: fakeredis.FakeRedis, key_prefix: str, clocks: Clocks
) -> Iterator[Callable[..., RedisAttributeClient]]:
    made: list[RedisAttributeClient] = []

    def make(**kwargs: object) -> RedisAttributeClient:
        kwargs.setdefault("service_name", SERVICE)
        kwargs.setdefault("identity_provider_url", IDP)
        kwargs.setdefault("key_prefix", key_prefix)
        kwargs.setdefault("invalidation", False)
        kwargs.setdefault("redis", redis)
        kwargs.setdefault("timer", clocks.timer)
        kwargs.setdefault("wall_clock", clocks.wall)
        kwargs.setdefault("ttl", 100)
        kwargs.setdefault("local_cache_ttl", 1000)
        client = RedisAttributeClient(**kwargs)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def attrs(user_id: int = 7, version: int = 1, **fields: object) -> UserAttributes:
    fields.setdefault("roles", ["viewer"])
    fields.setdefault("fetched_at", WALL)
    return UserAttributes(user_id=user_id, service_name=SERVICE, version=version, **fields)  # type: ignore[arg-type]


def stored(redis: fakeredis.FakeRedis, prefix: str, value: UserAttributes, ttl: int = 100) -> None:
    assert store_attributes(redis, value, ttl, prefix)


# -- refresh-ahead ---------------------------------------------------------------------------


def test_refresh_ahead_starts_when_a_read_finds_a_tenth_of_the_ttl_left(
    make_client, redis, key_prefix, clocks, idp
) -> None:
    stored(redis, key_prefix, attrs(roles=["old"]))
    idp.add(7, roles=["new"], version=2, fetched_at=WALL + 95)
    client = make_client()  # ttl 100, refresh_ahead 0.1: due 90 s after the value was fetched
    assert client.get_user_attributes(7).roles == ("old",)
    entry = client.local.get_entry((SERVICE, 7))
    assert entry.expires == clocks.now + 100 and entry.due == clocks.now + 90
    clocks.advance(89)
    assert client.get_user_attributes(7).roles == ("old",)
    assert idp.requests == []
    clocks.advance(1)  # exactly due
    # Due: the read answers at once with what it has and refreshes in the background.
    assert client.get_user_attributes(7).roles == ("old",)
    assert wait_for(lambda: client.stats()["refresh_ahead"] == 1)
    assert len(idp.requests) == 1
    assert wait_for(lambda: client.get_user_attributes(7).roles == ("new",))
    assert len(idp.requests) == 1


def test_a_pending_refresh_ahead_is_looked_at_again_after_the_lease_or_the_interval(
    make_client, redis, key_prefix, clocks, idp
) -> None:
    stored(redis, key_prefix, attrs())
    # Another process holds the lease: this one's background refresh gives up at once.
    redis.set(lease_key(key_prefix, SERVICE, 7), "another-process", px=60_000)
    client = make_client(idp_timeout=(1.0, 2.0))  # lease 4 s; the interval is 10 s
    client.get_user_attributes(7)
    clocks.advance(90)
    assert client.get_user_attributes(7).version == 1
    # Not due again at once (every read would start one), nor only at its end: in 4 s.
    assert client.local.get_entry((SERVICE, 7)).due == clocks.now + 4
    assert wait_for(lambda: not client._ahead_pending)
    assert idp.requests == []


# -- sliding expiration ----------------------------------------------------------------------


def sliding_client(make_client, **kwargs: object) -> RedisAttributeClient:
    kwargs.setdefault("sliding_expiration", True)
    kwargs.setdefault("sliding_interval", 10)
    kwargs.setdefault("max_age", 300)
    kwargs.setdefault("refresh_ahead", 0)
    return make_client(**kwargs)


def test_sliding_expiration_extends_the_ttl_on_the_read_that_finds_it_due(
    make_client, redis, key_prefix, clocks, idp
) -> None:
    stored(redis, key_prefix, attrs())
    client = sliding_client(make_client)
    extended = []
    client.extender.extend = lambda name, ms: extended.append((name, ms))  # type: ignore[method-assign]
    with mock.patch.object(redis, "pttl", return_value=100_000):  # exactly the TTL
        assert client.get_user_attributes(7).version == 1
    entry = client.local.get_entry((SERVICE, 7))
    start = clocks.now
    # Expires in 100 s, may be extended until 300 s after it was fetched, first in 10 s.
    assert (entry.expires, entry.limit, entry.due) == (start + 100, start + 300, start + 10)
    clocks.advance(9)
    assert client.get_user_attributes(7).version == 1
    assert extended == []
    clocks.advance(1)  # exactly due
    assert client.get_user_attributes(7).version == 1
    assert extended == [(client.key(7), 100_000)]
    entry = client.local.get_entry((SERVICE, 7))
    assert (entry.expires, entry.limit, entry.due) == (start + 110, start + 300, start + 20)
    assert idp.requests == []
    assert client.stats()["l1_hits"] == 2


def test_sliding_extension_reaches_redis(make_client, redis, key_prefix, clocks) -> None:
    stored(redis, key_prefix, attrs())
    client = sliding_client(make_client)
    client.get_user_attributes(7)
    redis.pexpire(client.key(7), 50_000)
    clocks.advance(10)
    client.get_user_attributes(7)
    assert client.extender.flush() == 1
    assert redis.pttl(client.key(7)) > 90_000
    assert client.stats()["redis_errors"] == 0


def test_sliding_never_extends_past_the_max_age(
    make_client, redis, key_prefix, clocks, idp
) -> None:
    stored(redis, key_prefix, attrs())
    client = sliding_client(make_client)
    extended = []
    client.extender.extend = lambda name, ms: extended.append((name, ms))  # type: ignore[method-assign]
    with mock.patch.object(redis, "pttl", return_value=100_000):
        client.get_user_attributes(7)
    clocks.advance(250)  # 50 s left of the max age
    client.get_user_attributes(7)
    assert extended == [(client.key(7), 50_000)]
    entry = client.local.get_entry((SERVICE, 7))
    assert entry.expires == entry.limit == clocks.now + 50
    clocks.advance(40)
    client.get_user_attributes(7)
    assert len(extended) == 1  # at its limit: never extended again
    assert idp.requests == []


def test_an_extension_is_at_least_a_millisecond(make_client, redis, key_prefix, clocks) -> None:
    # About to expire in Redis, and less than a millisecond before its max age.
    stored(redis, key_prefix, attrs(fetched_at=WALL - 300 + 0.0008))
    client = sliding_client(make_client)
    extended = []
    client.extender.extend = lambda name, ms: extended.append((name, ms))  # type: ignore[method-assign]
    with mock.patch.object(redis, "pttl", return_value=0):
        assert client.get_user_attributes(7).version == 1
    assert extended == [(client.key(7), 1)]


def test_at_the_max_age_a_read_refreshes_from_the_idp(
    make_client, redis, key_prefix, clocks, idp
) -> None:
    stored(redis, key_prefix, attrs(roles=["old"]))
    idp.add(7, roles=["new"], version=2, fetched_at=WALL + 300)
    client = sliding_client(make_client)
    assert client.get_user_attributes(7).roles == ("old",)
    clocks.advance(300)  # exactly the max age
    assert client.get_user_attributes(7).roles == ("new",)
    assert len(idp.requests) == 1
    assert client.stats()["auto_refreshes"] == 1


# -- what a failure or a bad value leaves behind ---------------------------------------------


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "flask_rbac_abac.client" and record.levelno == logging.WARNING
    ]


def test_a_failed_redis_read_is_counted_logged_and_marks_redis_degraded(
    make_client, server, idp, caplog
) -> None:
    idp.add(7, roles=["admin"])
    mine = fakeredis.FakeRedis(server=server)  # the IdP writes through its own connection
    client = make_client(redis=mine)
    assert client.get_user_attributes(8, auto_refresh=False) is None
    assert client.health.state("redis") == "ok"
    down = RedisConnectionError("no route to redis")
    # Redis is down for this client: the lookup asks it once, not again for the lease.
    with mock.patch.object(mine, "get", side_effect=down):
        with mock.patch.object(mine, "eval", side_effect=down):
            with caplog.at_level(logging.WARNING, logger="flask_rbac_abac.client"):
                assert client.get_user_attributes(7).roles == ("admin",)
    assert client.stats()["redis_errors"] == 1
    assert client.health.state("redis") == "degraded"
    assert warnings_of(caplog) == [
        "Redis read failed, going to the identity provider: no route to redis"
    ]


def test_a_failed_ttl_read_serves_the_value_read(make_client, redis, key_prefix, caplog) -> None:
    stored(redis, key_prefix, attrs())
    client = sliding_client(make_client)
    with mock.patch.object(redis, "pttl", side_effect=RedisConnectionError("gone")):
        with caplog.at_level(logging.WARNING, logger="flask_rbac_abac.client"):
            assert client.get_user_attributes(7).version == 1
    assert client.stats()["redis_errors"] == 1
    assert client.health.state("redis") == "degraded"
    assert warnings_of(caplog) == ["Redis read failed, going to the identity provider: gone"]
    assert client.local.get_entry((SERVICE, 7)).expires == math.inf


def test_an_undecodable_value_is_logged_with_its_key_and_why(
    make_client, redis, idp, caplog
) -> None:
    idp.add(7)
    client = make_client()
    raw = b"\x80\x04\x95pickle-bytes"
    redis.set(client.key(7), raw)
    with pytest.raises(DecodeError) as why:
        decode_value(raw, {})
    with caplog.at_level(logging.WARNING, logger="flask_rbac_abac.client"):
        assert client.get_user_attributes(7) is not None
    assert warnings_of(caplog) == [
        f"undecodable value at {client.key(7)} treated as a miss: {why.value}"
    ]


def test_a_value_of_another_key_is_logged_with_its_key(
    make_client, redis, key_prefix, idp, caplog
) -> None:
    idp.add(7)
    client = make_client()
    redis.set(client.key(7), attrs(user_id=8).to_json())
    with caplog.at_level(logging.WARNING, logger="flask_rbac_abac.client"):
        assert client.get_user_attributes(7).user_id == 7
    assert client.stats()["decode_errors"] == 1
    assert warnings_of(caplog) == [
        f"value at {client.key(7)} belongs to another key; treated as a miss"
    ]


def test_a_stale_value_is_logged_and_signalled(make_client, idp, clocks, caplog) -> None:
    idp.add(7, roles=["admin"])
    client = make_client(local_cache_ttl=60, max_stale=300)
    served = client.get_user_attributes(7)
    client.redis.delete(client.key(7))
    clocks.advance(120)
    heard = []

    def listener(sender: object, **kwargs: object) -> None:
        heard.append((sender, kwargs))

    idp.mock.replace("POST", REFRESH, status=500)
    with signals.stale_served.connected_to(listener):
        with caplog.at_level(logging.WARNING, logger="flask_rbac_abac.client"):
            assert client.get_user_attributes(7) is served
    assert heard == [(client, {"attributes": served, "age": 120.0})]
    assert f"serving {SERVICE}/7 120 s stale: the IdP is failing" in warnings_of(caplog)


def test_the_redis_key_of_another_service(make_client, key_prefix) -> None:
    client = make_client()
    assert client.key(7) == f"{key_prefix}:attrs:{SERVICE}:7"
    assert client.key("7", "reports") == f"{key_prefix}:attrs:reports:7"


def test_a_short_ttl_on_the_value_read_starts_a_refresh_ahead(
    make_client, redis, key_prefix, clocks, idp
) -> None:
    # Fetched 95 s ago and 5 s left in Redis (of a 100 s TTL): the L2 read itself is due.
    stored(redis, key_prefix, attrs(roles=["old"], fetched_at=WALL - 95), ttl=5)
    idp.add(7, roles=["new"], version=2)
    client = make_client()
    assert client.get_user_attributes(7).roles == ("old",)
    assert wait_for(lambda: client.stats()["refresh_ahead"] == 1)
    assert wait_for(lambda: client.get_user_attributes(7).roles == ("new",))
    assert len(idp.requests) == 1


def test_a_refresh_ahead_of_a_value_written_with_a_short_ttl(
    make_client, redis, key_prefix, clocks, idp
) -> None:
    idp.add(7, roles=["new"], version=2)
    client = make_client()
    # Written here with 10 s to live (of the usual 100 s): due at once, though recently fetched.
    assert client.set_user_attributes(attrs(roles=["old"]), ttl=10)
    assert client.get_user_attributes(7).roles == ("old",)
    assert wait_for(lambda: client.stats()["refresh_ahead"] == 1)
    assert len(idp.requests) == 1


def test_a_due_entry_found_under_its_normalised_key_is_acted_on(
    make_client, redis, key_prefix, clocks, idp
) -> None:
    stored(redis, key_prefix, attrs(roles=["old"]))
    idp.add(7, roles=["new"], version=2)
    client = make_client()
    client.get_user_attributes(7)
    clocks.advance(90)
    assert client.get_user_attributes("7").roles == ("old",)  # "7" is user 7
    assert wait_for(lambda: client.stats()["refresh_ahead"] == 1)
    assert len(idp.requests) == 1


def test_the_ttl_of_a_key_as_redis_reports_it(make_client, redis, key_prefix, clocks) -> None:
    client = sliding_client(make_client)
    stored(redis, key_prefix, attrs(user_id=7))
    redis.set(client.key(8), attrs(user_id=8).to_json())  # no TTL at all
    client.get_user_attributes(7)
    client.get_user_attributes(8)
    assert clocks.now + 99 < client.local.get_entry((SERVICE, 7)).expires <= clocks.now + 100
    assert client.local.get_entry((SERVICE, 8)).expires == math.inf


# -- the identity provider ------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, body, health",
    [
        (400, {"success": False, "error": "bad request"}, "ok"),
        (402, {"success": False, "error": "payment required"}, "ok"),
        (404, {"success": False, "error": "service 'x' is not registered"}, "ok"),
        (401, {"success": False, "error": "bad token"}, "degraded"),
        (403, {"success": False, "error": "not allowed"}, "degraded"),
        (502, {"success": False}, "degraded"),
    ],
)
def test_an_idp_refusal_proves_it_up_unless_it_refuses_this_service(
    make_client, idp, status, body, health
) -> None:
    client = make_client()
    client.health.record("idp", health != "ok")  # the opposite of what the refusal shows
    idp.mock.replace("POST", REFRESH, status=status, json=body)
    with pytest.raises(IdentityProviderError):
        client.get_user_attributes(7)
    assert client.health.state("idp") == health
    assert client.stats()["idp_errors"] == 1


def test_an_idp_failure_is_logged_with_the_user(make_client, idp, caplog) -> None:
    client = make_client()
    idp.mock.replace("POST", REFRESH, status=502)
    with caplog.at_level(logging.WARNING, logger="flask_rbac_abac.client"):
        with pytest.raises(IdentityProviderError):
            client.get_user_attributes(7)
    assert warnings_of(caplog) == [
        f"identity provider refresh of {SERVICE}/7 failed: identity provider answered 502"
    ]


def test_only_calls_the_open_breaker_refuses_count_as_breaker_rejections(make_client, idp) -> None:
    client = make_client()
    idp.mock.replace("POST", REFRESH, status=503)
    for _ in range(3):
        with pytest.raises(IdentityProviderError):
            client.get_user_attributes(7)
    assert client.stats()["breaker_rejections"] == 0
    with pytest.raises(IdentityProviderError, match="circuit breaker is open"):
        client.get_user_attributes(7)
    stats = client.stats()
    assert stats["breaker_rejections"] == 1 and stats["idp_errors"] == 4


def test_the_breaker_gauge_follows_each_idp_call(make_client, idp) -> None:
    idp.add(7)
    client = make_client()
    client.metrics.exporter = PrometheusMetrics(SERVICE)
    registry = client.metrics.exporter.registry
    assert client.get_user_attributes(7) is not None
    assert registry.get_sample_value(f"{PREFIX}breaker_open", {"service": SERVICE}) == 0
    idp.mock.replace("POST", REFRESH, status=503)
    for user in (8, 9, 10):
        with pytest.raises(IdentityProviderError):
            client.get_user_attributes(user)
    assert registry.get_sample_value(f"{PREFIX}breaker_open", {"service": SERVICE}) == 1


def test_a_failed_refresh_leaves_its_failure_in_the_lease(
    make_client, redis, key_prefix, idp
) -> None:
    client = make_client()
    idp.mock.replace("POST", REFRESH, status=503)
    with pytest.raises(IdentityProviderError):
        client.get_user_attributes(7)
    # For the other processes waiting on it: they fail too, without calling the IdP again.
    assert redis.get(lease_key(key_prefix, SERVICE, 7)) == LEASE_FAILED.encode()


@pytest.mark.parametrize(
    "in_redis",
    ["nothing", "undecodable", "another key"],
)
def test_a_miss_holds_the_lease_while_it_asks_the_idp(
    make_client, redis, key_prefix, idp, in_redis
) -> None:
    idp.add(7)
    client = make_client()
    if in_redis == "undecodable":
        redis.set(client.key(7), b"not json")
    elif in_redis == "another key":
        redis.set(client.key(7), attrs(user_id=8).to_json())
    lease = lease_key(key_prefix, SERVICE, 7)
    held = []
    answer = idp._refresh

    def observed(request):  # type: ignore[no-untyped-def]
        held.append(redis.get(lease) is not None)
        return answer(request)

    idp._refresh = observed  # type: ignore[method-assign]
    idp.mock.remove("POST", REFRESH)
    idp.mock.add_callback("POST", REFRESH, callback=lambda request: idp._refresh(request))
    assert client.get_user_attributes(7).user_id == 7
    assert held == [True]
    assert redis.get(lease) is None


def test_an_auto_refresh_is_signalled_as_not_manual(make_client, idp) -> None:
    idp.add(7)
    client = make_client()
    heard = []

    def listener(sender: object, **kwargs: object) -> None:
        heard.append((sender, kwargs))

    with signals.attributes_refreshed.connected_to(listener):
        got = client.get_user_attributes(7)
    assert heard == [(client, {"attributes": got, "manual": False})]


def test_concurrent_misses_of_two_users_are_two_flights(make_client, idp) -> None:
    idp.add(7, roles=["seven"])
    idp.add(8, roles=["eight"])
    answer = idp._refresh
    asked = []

    def slow(request):  # type: ignore[no-untyped-def]
        asked.append(json.loads(request.body)["user_id"])
        # User 7's answer waits until user 8's request has arrived too (or 5 s).
        wait_for(lambda: 8 in asked)
        return answer(request)

    idp._refresh = slow  # type: ignore[method-assign]
    idp.mock.remove("POST", REFRESH)
    idp.mock.add_callback("POST", REFRESH, callback=lambda request: idp._refresh(request))
    client = make_client()
    results: dict[int, object] = {}
    threads = [
        threading.Thread(target=lambda u=u: results.update({u: client.get_user_attributes(u)}))
        for u in (7, 8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results[7].roles == ("seven",) and results[8].roles == ("eight",)
    assert client.stats()["refresh_waits"] == 0


# -- the lookup itself ------------------------------------------------------------------------


def test_the_first_lookup_starts_the_invalidation_subscriber(make_client) -> None:
    client = make_client(invalidation=True)
    assert client.subscriber.state()["alive"] is False
    client.get_user_attributes(7, auto_refresh=False)
    assert client.subscriber.state()["alive"] is True


def test_an_entry_of_the_default_service_never_answers_for_another(
    make_client, redis, key_prefix
) -> None:
    stored(redis, key_prefix, attrs())
    client = make_client()
    assert client.get_user_attributes(7).service_name == SERVICE
    assert client.get_user_attributes(7, "reports", auto_refresh=False) is None


def test_l1_hits_are_counted_not_timed_and_other_lookups_are_timed(
    make_client, redis, key_prefix
) -> None:
    stored(redis, key_prefix, attrs())
    client = make_client()
    ticks = iter(range(1000, 2000))
    with mock.patch("time.perf_counter", side_effect=lambda: float(next(ticks))):
        client.get_user_attributes(7)  # L2 hit: timed
        client.get_user_attributes(7)  # L1 hit: counted only
    stats = client.stats()
    assert stats["timed_lookups"] == 1 and stats["l1_hits"] == 1
    assert 0 < stats["lookup_seconds_total"] < 10  # a few ticks, not a clock reading


def test_an_invalidation_is_signalled(make_client) -> None:
    client = make_client()
    heard = []

    def listener(sender: object, **kwargs: object) -> None:
        heard.append((sender, kwargs))

    with signals.cache_invalidated.connected_to(listener):
        client._on_invalidation(Invalidation(7, SERVICE, 3))
    assert heard == [(client, {"user_id": 7, "service_name": SERVICE, "version": 3})]
    assert client.stats()["invalidations"] == 1


def test_a_refresh_ahead_goes_on_when_only_the_ttl_cannot_be_read(
    make_client, redis, key_prefix, clocks, idp
) -> None:
    stored(redis, key_prefix, attrs(roles=["old"]))
    idp.add(7, roles=["new"], version=2)
    client = make_client()
    client.get_user_attributes(7)  # recently fetched: no PTTL needed
    clocks.advance(90)
    with mock.patch.object(redis, "pttl", side_effect=RedisConnectionError("gone")):
        assert client.get_user_attributes(7).roles == ("old",)
        # The background read of the value worked (its TTL did not): it still refreshes.
        assert wait_for(lambda: client.stats()["refresh_ahead"] == 1)
    assert len(idp.requests) == 1
    assert client.stats()["redis_errors"] == 1


def test_the_lease_holders_value_lands_in_l1_with_a_full_ttl(
    make_client, redis, key_prefix, clocks, idp
) -> None:
    client = make_client()
    other_process = make_client()
    redis.set(lease_key(key_prefix, SERVICE, 7), "another-process", px=5000)
    writer = threading.Timer(0.15, other_process.set_user_attributes, [attrs(roles=["theirs"])])
    writer.start()
    try:
        assert client.get_user_attributes(7).roles == ("theirs",)
    finally:
        writer.cancel()
    assert idp.requests == []
    assert client.local.get_entry((SERVICE, 7)).expires == clocks.now + 100
    with mock.patch.object(redis, "get", side_effect=AssertionError("Redis was read")):
        assert client.get_user_attributes(7).roles == ("theirs",)
    assert client.stats()["l1_hits"] == 1

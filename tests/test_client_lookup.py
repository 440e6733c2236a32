"""RedisAttributeClient's lookup path on fakeredis with controlled clocks: the expiry times a
read records, refresh-ahead and sliding expiration as a read triggers them, and the counters,
Redis writes and IdP calls of each branch (fast: part of the mutation run, see setup.cfg)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import fakeredis
import pytest
import responses

from flask_rbac_abac import RedisAttributeClient, UserAttributes
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
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


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
    clocks.advance(6)
    # Due: the read answers at once with what it has and refreshes in the background.
    assert client.get_user_attributes(7).roles == ("old",)
    assert wait_for(lambda: client.stats()["refresh_ahead"] == 1)
    assert len(idp.requests) == 1
    assert wait_for(lambda: client.get_user_attributes(7).roles == ("new",))
    assert len(idp.requests) == 1

"""Redis clients from URLs: small timeouts, bounded retry, Sentinel and Cluster."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster

from flask_rbac_abac import ConfigurationError, RedisAttributeClient, UserAttributes
from flask_rbac_abac.connection import connect

from .servers import Sentinel, require_redis_server


def test_plain_url_gets_small_timeouts_and_one_retry() -> None:
    client = connect("redis://127.0.0.1:6379/3", timeout=0.1)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.1 and kwargs["socket_connect_timeout"] == 0.1
    assert kwargs["db"] == 3
    retry = kwargs["retry"]
    assert retry._retries == 1 and isinstance(retry._backoff, NoBackoff)
    other = connect("redis://127.0.0.1:6379/0")
    assert other.connection_pool.connection_kwargs["retry"] is not retry


def test_unix_url() -> None:
    client = connect("unix:///tmp/nowhere.sock?db=2")
    assert client.connection_pool.connection_kwargs["path"] == "/tmp/nowhere.sock"


@pytest.mark.parametrize(
    "url, message",
    [
        ("memcached://x", "RBAC_ABAC_REDIS_URL: unsupported scheme 'memcached'"),
        ("redis+sentinel://127.0.0.1:26379", "needs the service name as its path"),
        ("redis+sentinel://127.0.0.1:port/mymaster", "bad port in '127.0.0.1:port'"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        connect(url)


def test_dead_redis_fails_fast(free_port: int) -> None:
    client = connect(f"redis://127.0.0.1:{free_port}/0", timeout=0.1)
    started = time.perf_counter()
    with pytest.raises(Exception, match="Error"):
        client.get("x")
    assert time.perf_counter() - started < 0.5


@pytest.fixture
def sentinel(tmp_path) -> Iterator[Sentinel]:
    require_redis_server()
    server = Sentinel(tmp_path).start()
    yield server
    server.stop()


def test_sentinel_url_reaches_the_master(sentinel: Sentinel, key_prefix: str) -> None:
    client = RedisAttributeClient(
        sentinel.url, service_name="billing_api", key_prefix=key_prefix, invalidation=False
    )
    try:
        attrs = UserAttributes(user_id=1, service_name="billing_api", roles=["admin"])
        assert client.set_user_attributes(attrs) is True
        assert client.get_user_attributes(1, auto_refresh=False) == attrs
        direct = connect(sentinel.master.url)
        assert UserAttributes.from_json(direct.get(client.key(1))) == attrs
        assert client.health.probe("redis") is True
    finally:
        client.close()


def test_cluster_url_gives_a_cluster_client(redis_cluster) -> None:
    client = connect(redis_cluster.url, timeout=0.5)
    assert isinstance(client, RedisCluster)
    assert len(client.get_primaries()) == 3
    client.close()

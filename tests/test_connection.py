"""Redis clients from URLs: small timeouts, bounded retry, Sentinel and Cluster."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster

from flask_rbac_abac import ConfigurationError, RedisAttributeClient, UserAttributes
from flask_rbac_abac.connection import close, connect

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
    assert time.perf_counter() - started < 2.0  # refused at once; a hang would be unbounded


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


class _Captured:
    """Stands in for ``RedisCluster`` to see what :func:`connect` hands redis-py."""

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> tuple[str, dict[str, object]]:
        return url, kwargs


def _cluster_args(monkeypatch: pytest.MonkeyPatch, url: str) -> tuple[str, list[str], dict]:
    import flask_rbac_abac.connection as connection

    monkeypatch.setattr(connection, "RedisCluster", _Captured)
    first, kwargs = connect(url, timeout=0.3)
    nodes = [node.name for node in kwargs.pop("startup_nodes")]
    return first, nodes, kwargs


def test_cluster_url_with_one_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    first, nodes, kwargs = _cluster_args(monkeypatch, "redis+cluster://10.0.0.1:7000")
    assert first == "redis://10.0.0.1:7000"
    assert nodes == ["10.0.0.1:7000"]
    assert kwargs["socket_timeout"] == 0.3 and kwargs["socket_connect_timeout"] == 0.3
    assert kwargs["retry"]._retries == 1


def test_cluster_url_with_several_seeds_keeps_credentials_and_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "rediss+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,redis-c:7002/?ssl_cert_reqs=none"
    first, nodes, _ = _cluster_args(monkeypatch, url)
    # redis-py reads user, password, TLS and options from the first seed's URL.
    assert first == "rediss://app:s%40cret@10.0.0.1:7000/?ssl_cert_reqs=none"
    assert nodes == ["10.0.0.1:7000", "10.0.0.2:6379", "redis-c:7002"]


def test_cluster_url_with_ipv6_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    first, nodes, _ = _cluster_args(monkeypatch, "redis+cluster://[::1]:7000,[fd00::2]:7001")
    assert first == "redis://[::1]:7000"
    assert nodes == ["::1:7000", "fd00::2:7001"]


@pytest.mark.parametrize(
    "url, part",
    [
        ("redis+cluster://127.0.0.1:x", "127.0.0.1:x"),
        ("redis+cluster://127.0.0.1:7000,127.0.0.1:7o01", "127.0.0.1:7o01"),
        ("redis+cluster://127.0.0.1:70000", "127.0.0.1:70000"),
        ("redis+cluster://127.0.0.1:0", "127.0.0.1:0"),
        ("redis+cluster://[::1]:x", "[::1]:x"),
        ("redis+sentinel://127.0.0.1:26379,h:-1/mymaster", "h:-1"),
    ],
)
def test_bad_seed_port(url: str, part: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        connect(url)
    assert str(info.value) == f"RBAC_ABAC_REDIS_URL: bad port in {part!r}"


@pytest.mark.parametrize(
    "address, message",
    [
        ("[::1]7000", "bad address '[::1]7000'"),
        ("[::1]:7000,[::2", "bad address '[::2'"),
        ("[::1", "not a valid URL (Invalid IPv6 URL)"),
    ],
)
def test_bad_ipv6_seed(address: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        connect(f"redis+cluster://{address}")
    assert str(info.value) == f"RBAC_ABAC_REDIS_URL: {message}"


def test_cluster_url_skips_a_dead_first_seed(redis_cluster, free_port: int) -> None:
    seeds = [f"127.0.0.1:{free_port}"] + [f"127.0.0.1:{n.port}" for n in redis_cluster.nodes]
    client = connect("redis+cluster://" + ",".join(seeds), timeout=0.5)
    try:
        assert isinstance(client, RedisCluster)
        assert len(client.get_primaries()) == 3
        node = client.get_node_from_key("x")
        kwargs = client.get_redis_connection(node).connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 0.5 and kwargs["socket_connect_timeout"] == 0.5
        # The cluster retries a command itself (once, after reading the topology again).
        assert client.retry._retries == 1
    finally:
        close(client)

"""Build a redis-py client from a URL, always with small timeouts and a bounded retry.

Schemes: ``redis://``, ``rediss://``, ``unix://`` (one server), ``redis+sentinel://`` and
``rediss+sentinel://`` (``host:port[,host:port...]/service_name[/db]``, Sentinel port 26379 by
default) and ``redis+cluster://`` / ``rediss+cluster://`` (``host:port[,host:port...]``: seed
nodes, any of which may be down at start; the client learns the rest of the cluster from them).
An IPv6 address is written in brackets: ``[::1]:7000``.
redis-py's own defaults (5 s timeouts, many retries) would turn a dead Redis into seconds per
request; these clients fail within a few timeouts instead. The identity provider connects
through the same :func:`connect` and :func:`check_scheme` (public via
:mod:`flask_rbac_abac.shared`), so both sides accept the same URLs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel

from .defaults import DEFAULT_REDIS_TIMEOUT
from .errors import ConfigurationError

_PLAIN = ("redis", "rediss", "unix")
_SENTINEL = ("redis+sentinel", "rediss+sentinel")
_CLUSTER = ("redis+cluster", "rediss+cluster")


def _timeouts(timeout: float, retries: int) -> dict[str, Any]:
    # A fresh Retry per client: redis-py's shared default object is exactly what to avoid.
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), retries),
    }


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    """``(host, port)`` of each comma-separated ``host[:port]`` in ``netloc`` (credentials
    dropped); IPv6 addresses come in brackets, ``[::1]:7000``, and leave without them."""
    hosts = []
    for part in netloc.rsplit("@", 1)[-1].split(","):
        if part.startswith("["):
            host, bracket, rest = part[1:].partition("]")
            port = rest.removeprefix(":")
            if not bracket or (rest and not rest.startswith(":")):
                raise ConfigurationError(f"RBAC_ABAC_REDIS_URL: bad address {part!r}")
        else:
            host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
        try:
            number = int(port) if port else default_port
        except ValueError:
            number = 0
        if not 0 < number < 65536:
            raise ConfigurationError(f"RBAC_ABAC_REDIS_URL: bad port in {part!r}")
        hosts.append((host or "127.0.0.1", number))
    return hosts


def _cluster(url: str, kwargs: dict[str, Any]) -> RedisCluster:
    """A cluster client seeded with every node of the URL.

    redis-py parses one ``host:port`` only, so it is handed the URL with the first seed (it
    still reads credentials, ``rediss`` and query options from it) and the whole list as
    ``startup_nodes``: should the first seed be down, the client asks the next one.
    """
    parts = urlsplit(url.replace("+cluster", "", 1))
    seeds = _hosts(parts.netloc, 6379)
    credentials, _, _ = parts.netloc.rpartition("@")
    host, port = seeds[0]
    first = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    netloc = f"{credentials}@{first}" if credentials else first
    nodes = [ClusterNode(h, p) for h, p in seeds]  # type: ignore[no-untyped-call, unused-ignore]
    first_url = parts._replace(netloc=netloc).geturl()
    return RedisCluster.from_url(first_url, startup_nodes=nodes, **kwargs)


def pubsub(client: Any, channel: str, failures: int = 0) -> Any:
    """A redis-py ``PubSub`` on ``client`` for classic (not sharded) pub/sub on ``channel``.

    On a cluster a classic ``PUBLISH`` reaches every node, so any live node can serve the
    subscription. redis-py would always pick the node of the channel's slot from its cached
    topology, and keep picking it after that node died; here, after ``failures`` failed
    attempts in a row, the topology is read again (best effort: it fails while slots are
    uncovered, during a failover) and the nodes are tried in turn, so the subscriber finds a
    live node even before the failover completes.
    """
    if not isinstance(client, RedisCluster):
        return client.pubsub()
    if failures:
        try:
            client.nodes_manager.initialize()
        except (redis.RedisError, RedisClusterException, OSError):
            pass
    first = client.get_node_from_key(channel)  # type: ignore[no-untyped-call, unused-ignore]
    known = client.get_nodes()  # type: ignore[no-untyped-call, unused-ignore]
    nodes = [first] + [n for n in known if n.name != first.name]
    return client.pubsub(node=nodes[failures % len(nodes)])  # type: ignore[no-untyped-call, unused-ignore]


def close(client: Any) -> None:
    """Close ``client`` and every pooled connection it holds (a cluster's per-node pools too)."""
    client.close()
    if isinstance(client, RedisCluster):
        client.disconnect_connection_pools()  # type: ignore[no-untyped-call, unused-ignore]


def check_scheme(url: str) -> str:
    """The URL's scheme (lower case) if this module can connect to it; else an error naming
    ``RBAC_ABAC_REDIS_URL``. Lets an app refuse a bad URL at start, before any connection."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket; the URL may hold a password
        raise ConfigurationError(f"RBAC_ABAC_REDIS_URL: not a valid URL ({exc})") from exc
    if scheme not in _PLAIN + _SENTINEL + _CLUSTER:
        raise ConfigurationError(
            f"RBAC_ABAC_REDIS_URL: unsupported scheme {scheme!r}; use one of "
            + ", ".join(s + "://" for s in _PLAIN + _SENTINEL + _CLUSTER)
        )
    return scheme


def connect(url: str, *, timeout: float = DEFAULT_REDIS_TIMEOUT, retries: int = 1) -> Any:
    """Return a redis-py client (``Redis`` or ``RedisCluster``) for ``url``.

    :param url: one of the schemes in the module docstring.
    :param timeout: connect and socket timeout in seconds, for every connection.
    :param retries: how many times a failed command is retried (no backoff).
    :raises ConfigurationError: when the URL cannot be used; the message names the key.
    """
    scheme = check_scheme(url)
    kwargs = _timeouts(timeout, retries)
    if scheme in _PLAIN:
        return redis.Redis.from_url(url, **kwargs)
    if scheme in _CLUSTER:
        return _cluster(url, kwargs)
    # What is left is a Sentinel URL.
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ConfigurationError(
            "RBAC_ABAC_REDIS_URL: a sentinel URL needs the service name as its path"
        )
    options = dict(parse_qsl(parts.query))
    conn: dict[str, Any] = dict(kwargs)
    conn["db"] = int(path[1]) if len(path) > 1 else 0
    if parts.password:
        conn["password"] = unquote(parts.password)
    if parts.username:
        conn["username"] = unquote(parts.username)
    if scheme.startswith("rediss"):
        conn["ssl"] = True
    sentinel_kwargs = _timeouts(timeout, retries)
    if "sentinel_password" in options:
        sentinel_kwargs["password"] = options["sentinel_password"]
    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        _hosts(parts.netloc, 26379), sentinel_kwargs=sentinel_kwargs, **_timeouts(timeout, 0)
    )
    return sentinel.master_for(path[0], **conn)  # type: ignore[no-untyped-call, unused-ignore]

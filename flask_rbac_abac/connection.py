"""Build a redis-py client from a URL, always with small timeouts and a bounded retry.

Schemes: ``redis://``, ``rediss://``, ``unix://`` (one server), ``redis+sentinel://`` and
``rediss+sentinel://`` (``host:port[,host:port...]/service_name[/db]``, Sentinel port 26379 by
default) and ``redis+cluster://`` / ``rediss+cluster://`` (``host:port`` of any cluster node).
redis-py's own defaults (5 s timeouts, many retries) would turn a dead Redis into seconds per
request; these clients fail within a few timeouts instead.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from .errors import ConfigurationError

DEFAULT_TIMEOUT = 0.25

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
    hosts = []
    for part in netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
        try:
            hosts.append((host or "127.0.0.1", int(port) if port else default_port))
        except ValueError as exc:
            raise ConfigurationError(f"RBAC_ABAC_REDIS_URL: bad port in {part!r}") from exc
    return hosts


def close(client: Any) -> None:
    """Close ``client`` and every pooled connection it holds (a cluster's per-node pools too)."""
    client.close()
    if isinstance(client, RedisCluster):
        client.disconnect_connection_pools()  # type: ignore[no-untyped-call]


def check_scheme(url: str) -> str:
    """The URL's scheme (lower case) if this module can connect to it; else an error naming
    ``RBAC_ABAC_REDIS_URL``. Lets an app refuse a bad URL at start, before any connection."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _PLAIN + _SENTINEL + _CLUSTER:
        raise ConfigurationError(
            f"RBAC_ABAC_REDIS_URL: unsupported scheme {scheme!r}; use one of "
            + ", ".join(s + "://" for s in _PLAIN + _SENTINEL + _CLUSTER)
        )
    return scheme


def connect(url: str, *, timeout: float = DEFAULT_TIMEOUT, retries: int = 1) -> Any:
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
        plain = url.replace("+cluster", "", 1)
        return RedisCluster.from_url(plain, **kwargs)
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
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        _hosts(parts.netloc, 26379), sentinel_kwargs=sentinel_kwargs, **_timeouts(timeout, 0)
    )
    return sentinel.master_for(path[0], **conn)  # type: ignore[no-untyped-call]

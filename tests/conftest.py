"""Shared fixtures: real services (skipped locally when absent, failing whenever CI is set)."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from ensure_services import in_ci  # noqa: E402

#: ``make mutation`` runs the fast tests once per mutant: the property tests then draw fewer
#: examples (``MUTATION_RUN=1``), enough to kill a mutant, not to search widely.
MUTATION_RUN = os.environ.get("MUTATION_RUN") == "1"


def examples(wanted: int) -> int:
    """The number of Hypothesis examples a property test draws: *wanted*, or 10 per mutant."""
    return min(wanted, 10) if MUTATION_RUN else wanted


#: ``CI`` set to any true value: a missing real service fails the run instead of skipping.
IN_CI = in_ci()


def service_missing(what: str) -> None:
    """Skip on a developer machine without the service; fail under CI, where it must exist."""
    if IN_CI:
        pytest.fail(f"{what} is required when CI is set but is not reachable")
    pytest.skip(f"{what} not reachable")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def key_prefix() -> str:
    """A key prefix (and so an invalidation channel) no other test uses."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def real_redis(key_prefix: str) -> Iterator[redis.Redis]:
    """The machine's Redis; every key under this test's prefix is deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        service_missing(f"Redis at {REDIS_URL}")
    yield client
    keys = list(client.scan_iter(match=f"{key_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the library's shared fixtures ----------------------------------------------------------

IDP = "http://idp.test"
SERVICE = "billing_api"
JWT_SECRET = "test-secret-" + "x" * 32


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A three-node Redis Cluster of the suite's own, started once."""
    from .servers import Cluster, require_redis_server

    require_redis_server()
    cluster = Cluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def ha_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Three masters with a replica each, failing over within about 2 s; one per module, as
    its failover tests kill masters."""
    from .servers import Cluster, require_redis_server

    require_redis_server()
    cluster = Cluster(tmp_path_factory.mktemp("ha-cluster"), replicas=1, node_timeout=1000)
    yield cluster.start()
    cluster.stop()


@pytest.fixture(scope="module")
def sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A master, a replica and three Sentinels failing over within about 3 s; one per module."""
    from .servers import SentinelSet, require_redis_server

    require_redis_server()
    servers = SentinelSet(tmp_path_factory.mktemp("ha-sentinel"), down_after=1000)
    yield servers.start()
    servers.stop()


@pytest.fixture(params=["fakeredis"] if MUTATION_RUN else ["fakeredis", "redis", "cluster"])
def backend(request: pytest.FixtureRequest, key_prefix: str) -> Iterator[redis.Redis]:
    """The same behaviour suite runs on fakeredis, the real Redis and a Redis Cluster.

    A mutation run (one test run per mutant) uses fakeredis only: Redis is not what it tests.
    """
    if request.param == "fakeredis":
        import fakeredis

        yield fakeredis.FakeRedis(server=fakeredis.FakeServer())
    elif request.param == "redis":
        yield request.getfixturevalue("real_redis")
    else:
        from flask_rbac_abac.connection import close, connect

        cluster = request.getfixturevalue("redis_cluster")
        client = connect(cluster.url, timeout=1.0)
        yield client
        keys = list(client.scan_iter(match=f"{key_prefix}:*"))
        for key in keys:
            client.delete(key)
        close(client)


class FakeIdP:
    """A `responses`-mocked identity provider that writes Redis as the real one does."""

    def __init__(self, mock, client: redis.Redis, prefix: str, ttl: int = 86400) -> None:
        from flask_rbac_abac.model import UserAttributes

        self.users: dict[tuple[str, int], dict] = {}
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.requests: list[dict] = []
        self._attrs = UserAttributes
        self.mock = mock  # a test may replace the endpoint (an IdP that fails)
        mock.add_callback("POST", IDP + "/api/refresh-user-cache/", callback=self._refresh)

    def add(self, user_id: int, service: str = SERVICE, **fields) -> None:
        self.users[(service, user_id)] = fields

    def _refresh(self, request):
        import json

        from flask_rbac_abac.store import store_attributes

        body = json.loads(request.body)
        self.requests.append({"body": body, "auth": request.headers.get("Authorization")})
        fields = self.users.get((body["service_name"], body["user_id"]))
        if fields is None:
            error = f"user {body['user_id']} not found or inactive"
            answer = {"success": False, "error": error, "code": "user_not_found"}
            return 404, {}, json.dumps(answer)
        attrs = self._attrs(user_id=body["user_id"], service_name=body["service_name"], **fields)
        store_attributes(self.client, attrs, self.ttl, self.prefix)
        answer = {
            "success": True,
            "user_id": attrs.user_id,
            "service_name": attrs.service_name,
            "attributes": attrs.to_dict(),
            "version": attrs.version,
            "ttl": self.ttl,
        }
        return 200, {}, json.dumps(answer)


@pytest.fixture
def idp(backend: redis.Redis, key_prefix: str) -> Iterator[FakeIdP]:
    import responses

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeIdP(mock, backend, key_prefix)


@pytest.fixture
def fake_idp(key_prefix: str) -> Iterator[FakeIdP]:
    """A FakeIdP over its own fakeredis (``fake_idp.client``): for tests of the app, not Redis."""
    import fakeredis
    import responses

    backend = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeIdP(mock, backend, key_prefix)


def library_config(key_prefix: str, **extra: object) -> dict[str, object]:
    """The smallest configuration of the library against the FakeIdP, plus ``extra``."""
    return {
        "SERVICE_NAME": SERVICE,
        "IDENTITY_PROVIDER_URL": IDP,
        "RBAC_ABAC_JWT_SECRET": JWT_SECRET,
        "RBAC_ABAC_KEY_PREFIX": key_prefix,
        "RBAC_ABAC_INVALIDATION": False,
        **extra,
    }


def make_token(user_id: object, secret: str = JWT_SECRET, **claims: object) -> str:
    import time

    import jwt

    payload = {
        "sub": str(user_id),
        "aud": "rbac-abac",
        "iss": "rbac-abac-idp",
        "exp": int(time.time()) + 300,
    }
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


def bearer(user_id: object, **claims: object) -> dict[str, str]:
    return {"Authorization": "Bearer " + make_token(user_id, **claims)}


def _tolerate_mutmut_call_context() -> None:
    """mutmut (3.8) keeps the caller of each trampolined call in a ContextVar, set on entry and
    reset with that token on exit. Under its stats pass the reset can find the variable gone
    (a ``LookupError`` out of a fixture's teardown, seen in about one run in four, failing the
    whole run). The variable is mutmut's own record of who called whom, not the code under test:
    restore it from the token instead of failing."""
    import contextvars

    try:
        from mutmut.core import MutmutCallStack
    except ImportError:  # not under mutmut
        return
    original_reset = MutmutCallStack.reset.__func__  # type: ignore[attr-defined]

    def reset(cls: type, token: contextvars.Token) -> None:  # type: ignore[type-arg]
        try:
            original_reset(cls, token)
        except (LookupError, ValueError, RuntimeError):
            old = token.old_value
            cls._ctx.set((None, 0) if old is contextvars.Token.MISSING else old)  # type: ignore[attr-defined]

    MutmutCallStack.reset = classmethod(reset)  # type: ignore[method-assign,assignment]


if MUTATION_RUN:
    _tolerate_mutmut_call_context()

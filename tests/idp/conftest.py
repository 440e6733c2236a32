"""IdP fixtures: an app per test on SQLite (tmp_path) and on the real PostgreSQL, real Redis.

The schema is the migrations' (``idp_app/migrations/``), never ``create_all()``'s, so every test
runs against what ``init-db`` builds. To stay fast the migrations run once per session per
backend: into a SQLite file each test's database is copied from, and into the session's
PostgreSQL database, whose tables are emptied before each test.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy import make_url, text

from idp_app import create_app, db, schema
from tests.conftest import POSTGRES_URL, REDIS_URL, port_open, service_missing

ADMIN_TOKEN = "admin-token-for-the-tests-0123456789"
JWT_SECRET = "idp-test-secret-" + "s" * 32
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MANIFEST = {
    "admin": ["invoice:read", "invoice:write", "report:read"],
    "accountant": ["invoice:read", "invoice:write"],
    "viewer": ["invoice:read"],
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def app_config(database_url: str, key_prefix: str, **overrides: Any) -> dict[str, Any]:
    return {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "RBAC_ABAC_REDIS_URL": REDIS_URL,
        "RBAC_ABAC_KEY_PREFIX": key_prefix,
        "IDP_ADMIN_TOKEN": ADMIN_TOKEN,
        "RBAC_ABAC_JWT_SECRET": JWT_SECRET,
        "IDP_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        **overrides,
    }


def dispose(app: Any) -> None:
    with app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


def migrate_to_head(database_url: str) -> None:
    """Run the migrations on this database, through an app of its own (disposed after)."""
    app = create_app(app_config(database_url, "idp-test-schema"))
    with app.app_context():
        schema.upgrade()
    dispose(app)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database; dropped (connections and all) on exit."""
    url = make_url(POSTGRES_URL)
    if not port_open(url.host or "127.0.0.1", url.port or 5432):
        service_missing(f"PostgreSQL at {url.host}:{url.port}")
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = "idp_test_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A database of its own for this session, migrated to the latest revision once."""
    with postgres_database() as url:
        migrate_to_head(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to the latest revision, copied into each test's empty database."""
    path = tmp_path_factory.mktemp("schema") / "idp.sqlite3"
    migrate_to_head(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'idp.sqlite3'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'idp.sqlite3'}"


@pytest.fixture
def make_app(key_prefix: str, sqlite_template: Path) -> Iterator[Callable[..., Any]]:
    """Build an app with the test's key prefix on the migrated schema with no rows (a SQLite
    file that already exists is left as it is); engines are disposed after.

    ``migrated=False`` leaves the database alone, for the tests of the migrations themselves.
    """
    apps = []

    def make(database_url: str, *, migrated: bool = True, **overrides: Any) -> Any:
        url = make_url(database_url)
        if migrated and url.get_backend_name() == "sqlite" and url.database:
            if not Path(url.database).exists():
                shutil.copyfile(sqlite_template, url.database)
        app = create_app(app_config(database_url, key_prefix, **overrides))
        if migrated and url.get_backend_name() == "postgresql":
            tables = ", ".join(table.name for table in db.metadata.sorted_tables)
            with app.app_context():
                db.session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
                db.session.commit()
        apps.append(app)
        return app

    yield make
    for app in apps:
        dispose(app)
        client = app.extensions["idp_app"].get("redis")
        if client is not None:
            client[1].close()


@pytest.fixture
def app(make_app: Callable[..., Any], database_url: str, real_redis: redis.Redis) -> Any:
    return make_app(database_url)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


class Api:
    """Small helpers over the test client for the common admin steps."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def service(self, name: str = "billing_api", roles: dict[str, list[str]] | None = None) -> str:
        r = self.client.post(
            "/api/services/", json={"name": name, "roles": roles or MANIFEST}, headers=ADMIN
        )
        assert r.status_code == 201, r.json
        return str(r.json["token"])

    def user(self, username: str, attributes: dict[str, Any] | None = None) -> int:
        body = {"username": username, "password": username + "-pass"}
        if attributes is not None:
            body["attributes"] = attributes
        r = self.client.post("/api/users/", json=body, headers=ADMIN)
        assert r.status_code == 201, r.json
        return int(r.json["id"])

    def roles(self, user_id: int, roles: list[str], service: str = "billing_api") -> Any:
        r = self.client.put(
            f"/api/users/{user_id}/roles/{service}", json={"roles": roles}, headers=ADMIN
        )
        assert r.status_code == 200, r.json
        return r.json

    def refresh(self, user_id: Any, service: Any = "billing_api", token: str | None = None) -> Any:
        headers = bearer(token) if token else ADMIN
        return self.client.post(
            "/api/refresh-user-cache/",
            json={"user_id": user_id, "service_name": service},
            headers=headers,
        )


@pytest.fixture
def api(client: Any) -> Api:
    return Api(client)


class Subscriber:
    """A real redis-py subscriber on the invalidation channel, subscribed before the change."""

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self.pubsub = client.pubsub()
        self.pubsub.subscribe(channel)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=1.0)
            if message and message["type"] == "subscribe":
                return
        raise AssertionError("could not subscribe")

    def messages(self, wait: float = 1.0) -> list[dict[str, Any]]:
        out = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message:
                out.append(json.loads(message["data"]))
            elif out:
                break
        return out

    def close(self) -> None:
        self.pubsub.close()


@pytest.fixture
def subscriber(real_redis: redis.Redis, key_prefix: str) -> Iterator[Subscriber]:
    from flask_rbac_abac.keys import invalidation_channel

    sub = Subscriber(real_redis, invalidation_channel(key_prefix))
    yield sub
    sub.close()

"""The outbox: rows written with each change, delivered until Redis accepts, then deleted.

Redis is fakeredis here (so it can be switched off and on between two commands); the database is
SQLite and the real PostgreSQL (``database_url`` is parametrised over both). The whole path on
real processes and a real redis-server is in ``tests/e2e/test_outbox.py``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import fakeredis
import pytest
import redis
from sqlalchemy import create_engine, select, text

import idp_app.cache
from flask_rbac_abac.keys import attributes_key, invalidation_channel
from flask_rbac_abac.model import UserAttributes
from idp_app import db, operations, outbox
from idp_app.models import OutboxEntry

from .conftest import ADMIN, Api


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeServer:
    """One fake Redis server for the app; ``server.connected = False`` makes it fail."""
    fake = fakeredis.FakeServer()
    monkeypatch.setattr(
        idp_app.cache, "connect", lambda url, timeout: fakeredis.FakeRedis(server=fake)
    )
    return fake


@pytest.fixture
def app(make_app: Any, database_url: str, server: fakeredis.FakeServer) -> Any:
    return make_app(database_url, IDP_OUTBOX_POLL_INTERVAL=0.25, IDP_OUTBOX_BACKOFF_MAX=1.0)


@pytest.fixture
def api(app: Any) -> Api:
    return Api(app.test_client())


def rows(app: Any) -> list[tuple[int, str | None, int | None]]:
    with app.app_context():
        found = db.session.execute(select(OutboxEntry).order_by(OutboxEntry.id)).scalars()
        return [(r.user_id, r.service_name, r.version) for r in found]


def cached(server: fakeredis.FakeServer, app: Any, uid: int) -> UserAttributes | None:
    prefix = app.config["RBAC_ABAC_KEY_PREFIX"]
    raw = fakeredis.FakeRedis(server=server).get(attributes_key(prefix, "billing_api", uid))
    return None if raw is None else UserAttributes.from_json(raw)


def test_every_change_writes_its_row_and_keeps_it_while_redis_is_down(api, app, server):
    api.service()
    uid = api.user("alice")
    other = api.user("bob")
    server.connected = False

    assert api.roles(uid, ["admin"])["cached"] is False
    r = api.client.patch(f"/api/users/{uid}/attributes", json={"a": 1}, headers=ADMIN)
    assert (r.status_code, r.json["cached"]) == (200, False)
    assert api.roles(other, ["viewer"])["cached"] is False
    r = api.client.post(
        "/api/services/",
        json={"name": "billing_api", "roles": {"admin": ["x"], "viewer": ["invoice:read"]}},
        headers=ADMIN,
    )
    assert (r.status_code, r.json["cached"]) == (200, False)
    r = api.client.delete(f"/api/users/{other}", headers=ADMIN)
    assert (r.status_code, r.json["cached"]) == (200, False)

    assert rows(app) == [
        (uid, "billing_api", 1),
        (uid, None, None),
        (other, "billing_api", 1),
        (uid, "billing_api", 3),  # the manifest changed for everyone holding a role
        (other, "billing_api", 2),
        (other, None, None),
    ]
    health = api.client.get("/healthz")
    assert health.status_code == 503  # Redis is down
    assert health.json["outbox"]["backlog"] == 6
    assert health.json["outbox"]["oldest_age_seconds"] >= 0


def test_a_rolled_back_change_leaves_no_row(app, api, server):
    api.service()
    uid = api.user("alice")
    with app.app_context():
        operations.set_roles(uid, "billing_api", ["admin"])
        db.session.rollback()
    assert rows(app) == []
    r = api.client.put(
        f"/api/users/{uid}/roles/billing_api", json={"roles": ["nope"]}, headers=ADMIN
    )
    assert r.status_code == 400
    assert rows(app) == []


def test_delivered_at_once_when_redis_answers_and_the_row_deleted(api, app, server):
    api.service()
    uid = api.user("alice")
    pubsub = fakeredis.FakeRedis(server=server).pubsub()
    pubsub.subscribe(invalidation_channel(app.config["RBAC_ABAC_KEY_PREFIX"]))
    pubsub.get_message(timeout=1)

    assert api.roles(uid, ["admin"])["cached"] is True
    assert rows(app) == []
    assert cached(server, app, uid).roles == ("admin",)
    message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
    assert json.loads(message["data"]) == {
        "schema": 1,
        "user_id": uid,
        "service_name": "billing_api",
        "version": 1,
    }


def test_late_deliveries_write_the_latest_state_never_an_old_one(api, app, server):
    api.service()
    uid = api.user("alice")
    server.connected = False
    api.roles(uid, ["admin"])
    api.roles(uid, ["viewer"])
    assert [r[2] for r in rows(app)] == [1, 2]
    server.connected = True
    with app.app_context():
        first = db.session.execute(select(OutboxEntry.id).order_by(OutboxEntry.id)).scalars()
        first_id = next(iter(first))
        db.session.rollback()
        # The older row, delivered alone, writes what the database holds now.
        assert outbox.deliver_one(first_id, wait=False) is outbox.Outcome.DELIVERED
    value = cached(server, app, uid)
    assert (value.roles, value.version) == (("viewer",), 2)
    # Delivered twice (another replica got there first): the second finds the row gone.
    with app.app_context():
        assert outbox.deliver_one(first_id, wait=True) is outbox.Outcome.DELIVERED
        assert outbox.deliver_pending() == outbox.Pass(delivered=1, failed=False)
    assert rows(app) == []
    assert cached(server, app, uid).version == 2


def test_an_inactive_user_is_deleted_from_redis(api, app, server):
    api.service()
    uid = api.user("alice")
    api.roles(uid, ["admin"])
    server.connected = False
    api.client.delete(f"/api/users/{uid}", headers=ADMIN)
    server.connected = True
    assert cached(server, app, uid).roles == ("admin",)
    with app.app_context():
        assert outbox.deliver_pending() == outbox.Pass(delivered=1, failed=False)
    assert cached(server, app, uid) is None
    assert rows(app) == []


class ScriptedStop:
    """A stand-in for the loop's stop event: records each wait, runs ``step`` after it."""

    def __init__(self, step: Any) -> None:
        self.waits: list[float] = []
        self.step = step
        self.done = False

    def is_set(self) -> bool:
        return self.done

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.step(self)
        return self.done


def test_the_loop_backs_off_while_redis_fails_then_delivers_and_deletes(api, app, server):
    api.service()
    uid = api.user("alice")
    server.connected = False
    api.roles(uid, ["admin"])

    def step(stop: ScriptedStop) -> None:
        if len(stop.waits) == 4:
            server.connected = True  # Redis comes back after four failed passes
        if len(stop.waits) == 5:
            stop.done = True

    stop = ScriptedStop(step)
    outbox.run(app, stop)  # type: ignore[arg-type]
    # poll 0.25 s, cap 1 s: 0.5, 1, 1, 1 while failing; then one pass delivers and polls.
    assert stop.waits == [0.5, 1.0, 1.0, 1.0, 0.25]
    assert rows(app) == []
    assert cached(server, app, uid).roles == ("admin",)


def test_the_loop_survives_a_broken_pass(app, monkeypatch):
    def boom() -> outbox.Pass:
        raise RuntimeError("bad pass")

    monkeypatch.setattr(outbox, "deliver_pending", boom)
    stop = ScriptedStop(lambda s: setattr(s, "done", len(s.waits) == 2))
    outbox.run(app, stop)  # type: ignore[arg-type]
    assert stop.waits == [0.5, 1.0]


def test_sync_outbox_command_delivers_and_exits_1_while_rows_remain(api, app, server):
    api.service()
    uid = api.user("alice")
    server.connected = False
    api.roles(uid, ["admin"])
    runner = app.test_cli_runner()
    result = runner.invoke(args=["sync-outbox"])
    assert (result.exit_code, result.output) == (1, "delivered 0; 1 pending\n")
    server.connected = True
    result = runner.invoke(args=["sync-outbox"])
    assert (result.exit_code, result.output) == (0, "delivered 1; 0 pending\n")
    assert cached(server, app, uid).roles == ("admin",)


def test_worker_thread_per_process_delivers_by_itself(make_app, sqlite_url, server):
    app = make_app(sqlite_url, IDP_OUTBOX_WORKER=True, IDP_OUTBOX_POLL_INTERVAL=0.05)
    api = Api(app.test_client())
    try:
        api.service()  # the first request starts this process's thread
        running = app.extensions["idp_app"]["outbox_worker"]
        assert running[0] == os.getpid() and running[1].is_alive()
        uid = api.user("alice")
        server.connected = False
        api.roles(uid, ["admin"])
        assert rows(app) == [(uid, "billing_api", 1)]
        server.connected = True
        deadline = time.monotonic() + 10
        while rows(app) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rows(app) == []
        assert cached(server, app, uid).roles == ("admin",)
        # A fork (another pid) starts its own thread; the parent's is not assumed to run there.
        app.extensions["idp_app"]["outbox_worker"] = (-1, *running[1:])
        outbox.ensure_worker(app)
        assert app.extensions["idp_app"]["outbox_worker"][1] is not running[1]
        running[2].set()
        running[1].join(5)
    finally:
        outbox.stop_worker(app)


def test_worker_is_off_when_testing_unless_enabled(app):
    assert outbox.worker_enabled(app) is False
    app.test_client().get("/healthz")
    assert "outbox_worker" not in app.extensions["idp_app"]
    app.config["IDP_OUTBOX_WORKER"] = True
    assert outbox.worker_enabled(app) is True
    app.config.update(IDP_OUTBOX_WORKER=None, TESTING=False)
    assert outbox.worker_enabled(app) is True


def test_postgres_replicas_skip_a_row_another_one_holds(make_app, pg_url, server):
    app = make_app(pg_url)
    api = Api(app.test_client())
    api.service()
    uid = api.user("alice")
    server.connected = False
    api.roles(uid, ["admin"])
    server.connected = True
    (entry_id,) = [r for r in _ids(app)]
    other = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with other.connect() as conn:
            conn.execute(
                text("SELECT id FROM sync_outbox WHERE id = :id FOR UPDATE"), {"id": entry_id}
            )
            holding.set()
            release.wait(10)
            conn.rollback()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10)
        with app.app_context():
            assert outbox.deliver_one(entry_id, wait=False) is outbox.Outcome.SKIPPED
            assert outbox.deliver_pending() == outbox.Pass(delivered=0, failed=False)
        assert rows(app) == [(uid, "billing_api", 1)]
    finally:
        release.set()
        thread.join(10)
        other.dispose()
    with app.app_context():
        assert outbox.deliver_pending() == outbox.Pass(delivered=1, failed=False)
    assert rows(app) == []


def _ids(app: Any) -> list[int]:
    with app.app_context():
        return list(db.session.execute(select(OutboxEntry.id)).scalars())


def test_healthz_reports_backlog_and_age_from_the_database(api, app, server):
    api.service()
    uid = api.user("alice")
    server.connected = False
    api.roles(uid, ["admin"])
    with app.app_context():
        db.session.execute(
            OutboxEntry.__table__.update().values(created_at=time.time() - 30)  # type: ignore[attr-defined]
        )
        db.session.commit()
    server.connected = True
    body = api.client.get("/healthz").json
    assert body["outbox"]["backlog"] == 1
    assert 29 <= body["outbox"]["oldest_age_seconds"] < 60


def test_redis_errors_are_never_raised_to_the_caller(app, api, server, monkeypatch):
    api.service()
    uid = api.user("alice")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise redis.TimeoutError("slow")

    monkeypatch.setattr(fakeredis.FakeRedis, "publish", broken)
    assert api.roles(uid, ["admin"])["cached"] is False
    assert rows(app) == [(uid, "billing_api", 1)]

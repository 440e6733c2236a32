"""What the IdP writes to Redis: codec values with the TTL, versions, invalidations, coalescing."""

from __future__ import annotations

import time

import fakeredis
import pytest
import redis
from sqlalchemy import event

import idp_app.cache
from flask_rbac_abac.keys import attributes_key
from flask_rbac_abac.model import UserAttributes
from flask_rbac_abac.store import store_attributes
from idp_app import db

from .conftest import ADMIN, Api


def cached(real_redis, prefix, uid, service="billing_api"):
    raw = real_redis.get(attributes_key(prefix, service, uid))
    return None if raw is None else UserAttributes.from_json(raw)


def test_refresh_writes_codec_value_with_default_ttl(api, real_redis, key_prefix):
    api.service()
    uid = api.user("alice", {"clearance": 5})
    api.roles(uid, ["admin"])
    real_redis.delete(attributes_key(key_prefix, "billing_api", uid))
    r = api.refresh(uid)
    value = cached(real_redis, key_prefix, uid)
    assert value is not None
    assert value.roles == ("admin",)
    assert value.permissions == ("invoice:read", "invoice:write", "report:read")
    assert value.get("clearance") == 5
    assert value.to_dict() == r.json["attributes"]
    ttl = real_redis.ttl(attributes_key(key_prefix, "billing_api", uid))
    assert 86400 - 5 <= ttl <= 86400


@pytest.mark.parametrize("how", ["config", "env"])
def test_cache_ttl_override(make_app, database_url, real_redis, key_prefix, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("RBAC_ABAC_CACHE_TTL", "321")
        app = make_app(database_url)
    else:
        app = make_app(database_url, RBAC_ABAC_CACHE_TTL=321)
    api = Api(app.test_client())
    api.service()
    uid = api.user("alice")
    api.roles(uid, ["viewer"])
    r = api.refresh(uid)
    assert r.json["ttl"] == 321
    ttl = real_redis.ttl(attributes_key(key_prefix, "billing_api", uid))
    assert 316 <= ttl <= 321


def test_every_change_publishes_an_invalidation(api, subscriber):
    api.service()
    uid = api.user("alice")
    assert subscriber.messages(wait=0.2) == []

    api.roles(uid, ["viewer"])
    assert subscriber.messages() == [
        {"schema": 1, "user_id": uid, "service_name": "billing_api", "version": 1}
    ]
    api.refresh(uid)
    msgs = subscriber.messages()
    assert msgs == [{"schema": 1, "user_id": uid, "service_name": "billing_api", "version": 1}]

    r = api.client.patch(f"/api/users/{uid}/attributes", json={"a": 1}, headers=ADMIN)
    assert r.status_code == 200
    assert subscriber.messages() == [
        {"schema": 1, "user_id": uid, "service_name": None, "version": None}
    ]

    r = api.client.post(
        "/api/services/",
        json={"name": "billing_api", "roles": {"viewer": ["invoice:read", "report:read"]}},
        headers=ADMIN,
    )
    assert r.status_code == 200
    assert subscriber.messages() == [
        {"schema": 1, "user_id": uid, "service_name": "billing_api", "version": 3}
    ]

    assert api.client.delete(f"/api/users/{uid}", headers=ADMIN).status_code == 200
    assert subscriber.messages() == [
        {"schema": 1, "user_id": uid, "service_name": None, "version": None}
    ]


def test_admin_changes_rewrite_redis_at_once(api, real_redis, key_prefix):
    api.service()
    api.service("shipping_api", {"clerk": ["parcel:read"]})
    uid = api.user("alice", {"clearance": 1})
    api.roles(uid, ["clerk"], "shipping_api")
    api.roles(uid, ["admin"])
    assert cached(real_redis, key_prefix, uid).roles == ("admin",)

    api.roles(uid, ["viewer"])
    value = cached(real_redis, key_prefix, uid)
    assert value.roles == ("viewer",)
    assert value.version == 2

    r = api.client.patch(f"/api/users/{uid}/attributes", json={"clearance": 2}, headers=ADMIN)
    assert r.json["versions"] == {"billing_api": 3, "shipping_api": 2}
    assert cached(real_redis, key_prefix, uid).get("clearance") == 2
    assert cached(real_redis, key_prefix, uid, "shipping_api").get("clearance") == 2
    assert cached(real_redis, key_prefix, uid).version == 3

    # A manifest change rewrites the holders' permissions.
    api.client.post(
        "/api/services/",
        json={"name": "billing_api", "roles": {"viewer": ["report:read"]}},
        headers=ADMIN,
    )
    value = cached(real_redis, key_prefix, uid)
    assert value.permissions == ("report:read",)
    assert value.version == 4

    assert api.client.delete(f"/api/users/{uid}", headers=ADMIN).status_code == 200
    assert cached(real_redis, key_prefix, uid) is None
    assert cached(real_redis, key_prefix, uid, "shipping_api") is None


def test_manifest_update_drops_removed_roles(api, real_redis, key_prefix):
    api.service()
    uid = api.user("alice")
    api.roles(uid, ["admin", "viewer"])
    api.client.post(
        "/api/services/",
        json={"name": "billing_api", "roles": {"viewer": ["invoice:read"]}},
        headers=ADMIN,
    )
    assert cached(real_redis, key_prefix, uid).roles == ("viewer",)
    assert api.refresh(uid).json["attributes"]["roles"] == ["viewer"]


def test_version_increases_and_an_entry_ahead_of_the_database_is_overwritten(
    api, real_redis, key_prefix
):
    api.service()
    uid = api.user("alice")
    versions = [api.roles(uid, r)["version"] for r in (["viewer"], ["admin"], ["viewer"])]
    assert versions == [1, 2, 3]
    # Redis holds a version the database never issued: corrupt, whatever its TTL.
    ahead = UserAttributes(uid, "billing_api", roles=("admin",), version=99)
    store_attributes(real_redis, ahead, 60, key_prefix)
    body = api.roles(uid, ["viewer"])
    assert body["cached"] is True
    assert cached(real_redis, key_prefix, uid).version == 4
    assert cached(real_redis, key_prefix, uid).roles == ("viewer",)
    assert api.client.get("/healthz").json["redis"]["repaired_entries"] == 1


def test_deactivated_user_refresh_deletes_a_stale_value(api, real_redis, key_prefix, subscriber):
    api.service()
    uid = api.user("alice")
    api.roles(uid, ["admin"])
    api.client.delete(f"/api/users/{uid}", headers=ADMIN)
    subscriber.messages()
    # A stale value appears (e.g. written by a racing writer); the next refresh removes it.
    stale = UserAttributes(uid, "billing_api", roles=("admin",), version=0)
    store_attributes(real_redis, stale, 60, key_prefix)
    assert api.refresh(uid).status_code == 404
    assert cached(real_redis, key_prefix, uid) is None
    assert subscriber.messages() == [
        {"schema": 1, "user_id": uid, "service_name": "billing_api", "version": None}
    ]


class QueryLog:
    def __init__(self, app):
        self.statements: list[str] = []
        with app.app_context():
            self.engine = db.engine
        event.listen(self.engine, "before_cursor_execute", self._log)

    def _log(self, conn, cursor, statement, *args):
        self.statements.append(statement)

    def user_loads(self) -> int:
        return sum(1 for s in self.statements if "FROM users" in s)

    def close(self):
        event.remove(self.engine, "before_cursor_execute", self._log)


@pytest.fixture
def queries(app):
    log = QueryLog(app)
    yield log
    log.close()


def test_refreshes_within_the_window_load_the_database_once(api, queries):
    token = api.service()
    uid = api.user("alice")
    api.roles(uid, ["viewer"])  # an admin change clears the window
    queries.statements.clear()
    first = api.refresh(uid, token=token)
    second = api.refresh(uid, token=token)
    assert first.status_code == second.status_code == 200
    assert queries.user_loads() == 1
    assert first.json["coalesced"] is False
    assert second.json["coalesced"] is True
    assert second.json["attributes"]["roles"] == ["viewer"]


def test_window_expires_and_admin_changes_are_never_hidden(make_app, database_url, real_redis):
    # A window wide enough for two refreshes on a loaded machine; the test then waits it out.
    app = make_app(database_url, IDP_REFRESH_COALESCE_SECONDS=2.0)
    api = Api(app.test_client())
    log = QueryLog(app)
    try:
        api.service()
        uid = api.user("alice")
        api.roles(uid, ["viewer"])
        log.statements.clear()
        assert api.refresh(uid).json["coalesced"] is False
        assert api.refresh(uid).json["coalesced"] is True
        assert log.user_loads() == 1
        api.roles(uid, ["admin"])  # clears the window and rewrites Redis
        assert api.refresh(uid).json["attributes"]["roles"] == ["admin"]
        time.sleep(2.1)
        log.statements.clear()
        assert api.refresh(uid).json["coalesced"] is False
        assert log.user_loads() == 1
    finally:
        log.close()


def test_unknown_user_loop_stays_off_the_database(api, queries):
    token = api.service()
    queries.statements.clear()
    for _ in range(5):
        assert api.refresh(4242, token=token).status_code == 404
    assert queries.user_loads() == 1


def test_coalescing_can_be_disabled(make_app, database_url, real_redis):
    app = make_app(database_url, IDP_REFRESH_COALESCE_SECONDS=0)
    api = Api(app.test_client())
    log = QueryLog(app)
    try:
        api.service()
        uid = api.user("alice")
        api.roles(uid, ["viewer"])
        log.statements.clear()
        api.refresh(uid)
        api.refresh(uid)
        assert log.user_loads() == 2
    finally:
        log.close()


# -- Redis down: the database is the source of truth ----------------------------------------


@pytest.fixture
def redis_down_app(make_app, database_url, free_port, key_prefix):
    return make_app(database_url, RBAC_ABAC_REDIS_URL=f"redis://127.0.0.1:{free_port}/0")


def test_redis_down_refresh_answers_from_the_database(redis_down_app):
    api = Api(redis_down_app.test_client())
    api.service()
    uid = api.user("alice", {"clearance": 5})
    body = api.roles(uid, ["admin"])
    assert body["cached"] is False
    r = api.refresh(uid)
    assert r.status_code == 200
    assert r.json["cached"] is False
    assert r.json["attributes"]["roles"] == ["admin"]
    assert r.json["attributes"]["attributes"] == {"clearance": 5}
    r = api.client.patch(f"/api/users/{uid}/attributes", json={"a": 1}, headers=ADMIN)
    assert (r.status_code, r.json["cached"]) == (200, False)
    r = api.client.delete(f"/api/users/{uid}", headers=ADMIN)
    assert (r.status_code, r.json["cached"]) == (200, False)
    assert api.refresh(uid).status_code == 404


def test_redis_down_healthz_is_503(redis_down_app):
    r = redis_down_app.test_client().get("/healthz")
    assert r.status_code == 503
    assert r.json["database"] == {"ok": True}
    assert r.json["redis"]["ok"] is False


class FailingWrites(fakeredis.FakeRedis):
    """Redis that accepts the coalescing SET, then drops the connection on the write."""

    def eval(self, *args, **kwargs):
        raise redis.ConnectionError("connection lost mid-request")


def test_redis_failing_mid_request_still_answers_200(make_app, sqlite_url, monkeypatch, key_prefix):
    server = fakeredis.FakeServer()
    monkeypatch.setattr(idp_app.cache, "connect", lambda url, timeout: FailingWrites(server=server))
    app = make_app(sqlite_url)
    api = Api(app.test_client())
    api.service()
    uid = api.user("alice")
    api.roles(uid, ["viewer"])
    r = api.refresh(uid)
    assert r.status_code == 200
    assert r.json["cached"] is False
    assert r.json["attributes"]["user_id"] == uid
    # The coalescing claim went through before the connection failed.
    keys = fakeredis.FakeRedis(server=server).keys("*")
    assert keys == [f"{key_prefix}:coalesce:billing_api:{uid}".encode()]


def test_undecodable_cached_value_is_replaced(api, real_redis, key_prefix):
    api.service()
    uid = api.user("alice")
    api.roles(uid, ["viewer"])
    key = attributes_key(key_prefix, "billing_api", uid)
    real_redis.set(key, b"\x80garbage")
    r = api.refresh(uid)
    assert r.status_code == 200
    assert cached(real_redis, key_prefix, uid).user_id == uid

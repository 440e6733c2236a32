"""Partial refresh at the identity provider: a change to one part patches the cached values.

On SQLite and the real PostgreSQL, with the real Redis. Each test checks the value in Redis with
the library's decoder against a full rebuild from the database (what delivery wrote before
partial refresh), and whether the database was read to get there.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import event

from flask_rbac_abac.codec import decode_value
from flask_rbac_abac.keys import attributes_key
from flask_rbac_abac.model import UserAttributes
from idp_app import cache, db, operations, outbox
from idp_app.models import OutboxEntry

from .conftest import ADMIN, Api


def cached(app: Any, redis_client: Any, user_id: int, service: str = "billing_api") -> Any:
    raw = redis_client.get(attributes_key(app.config["RBAC_ABAC_KEY_PREFIX"], service, user_id))
    return None if raw is None else decode_value(raw, app.config["RBAC_ABAC_VALUE_KEYS"])


def rebuilt(app: Any, user_id: int, service: str = "billing_api") -> UserAttributes | None:
    with app.app_context():
        user = operations.lock_user(user_id)
        value = operations.value_for_service(user, operations.get_service(service))
        db.session.rollback()
        return value


def same(a: UserAttributes | None, b: UserAttributes | None) -> bool:
    """Equal but for ``fetched_at`` (each write stamps its own)."""
    assert a is not None and b is not None
    return {**a.to_dict(), "fetched_at": 0} == {**b.to_dict(), "fetched_at": 0}


class Reads:
    """Counts what delivery reads of a rebuild (role assignments, versions) from the database.

    Only while :func:`idp_app.outbox.deliver` runs: the change itself reads versions as it bumps
    them, with or without partial refresh.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.rebuild = 0
        self.delivering = False

    def __enter__(self) -> Reads:
        with self.app.app_context():
            self.engine = db.engine
        event.listen(self.engine, "before_cursor_execute", self._count)
        self.deliver = outbox.deliver

        def deliver(sync: Any) -> bool:
            self.delivering = True
            try:
                return self.deliver(sync)
            finally:
                self.delivering = False

        outbox.deliver = deliver  # type: ignore[assignment]
        return self

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        text = statement.lower()
        if (
            self.delivering
            and text.startswith("select")
            and ("from role_assignments" in text or "from user_service_versions" in text)
        ):
            self.rebuild += 1

    def __exit__(self, *_: Any) -> None:
        outbox.deliver = self.deliver  # type: ignore[assignment]
        event.remove(self.engine, "before_cursor_execute", self._count)


@pytest.fixture
def setup(app: Any, api: Api) -> tuple[int, list[str]]:
    """A user with roles in three services (one sees only ``dept``), each value cached."""
    api.service()
    api.service("hr", {"clerk": ["file:read"]})
    r = api.client.post(
        "/api/services/",
        json={"name": "audit", "roles": {"auditor": ["log:read"]}, "attributes": ["dept"]},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.json
    api.service("other", {"x": ["y"]})  # the user holds no role here
    uid = api.user("ana", {"dept": "ops", "level": 3, "secret": "s"})
    api.roles(uid, ["viewer"])
    api.roles(uid, ["clerk"], "hr")
    api.roles(uid, ["auditor"], "audit")
    return uid, ["billing_api", "hr", "audit"]


def patch_attributes(api: Api, uid: int, body: dict[str, Any]) -> Any:
    r = api.client.patch(f"/api/users/{uid}/attributes", json=body, headers=ADMIN)
    assert r.status_code == 200, r.json
    assert r.json["cached"] is True
    return r.json


def test_an_attribute_change_patches_every_entry_without_a_rebuild(app, api, real_redis, setup):
    uid, services = setup
    with Reads(app) as reads:
        patch_attributes(api, uid, {"dept": "sales", "level": None, "new": [1, {}]})
    assert reads.rebuild == 0
    for service in services:
        assert same(cached(app, real_redis, uid, service), rebuilt(app, uid, service))
    assert dict(cached(app, real_redis, uid, "billing_api").attributes) == {
        "dept": "sales",
        "new": (1, {}),
        "secret": "s",
    }
    # The allow-list holds: audit sees dept only, patched too.
    assert dict(cached(app, real_redis, uid, "audit").attributes) == {"dept": "sales"}
    versions = {s: cached(app, real_redis, uid, s).version for s in services}
    assert versions == {"billing_api": 2, "hr": 2, "audit": 2}
    assert cached(app, real_redis, uid, "other") is None


def test_a_roles_change_patches_that_service_only(app, api, real_redis, setup):
    uid, _ = setup
    before_hr = real_redis.get(attributes_key(app.config["RBAC_ABAC_KEY_PREFIX"], "hr", uid))
    with Reads(app) as reads:
        body = api.roles(uid, ["admin", "viewer"])
    assert reads.rebuild == 0
    assert body["cached"] is True
    value = cached(app, real_redis, uid)
    assert same(value, rebuilt(app, uid))
    assert (value.roles, value.version) == (("admin", "viewer"), 2)
    assert real_redis.get(attributes_key(app.config["RBAC_ABAC_KEY_PREFIX"], "hr", uid)) == (
        before_hr
    )


def test_removing_every_role_deletes_the_entry(app, api, real_redis, setup):
    uid, _ = setup
    api.roles(uid, [])
    assert cached(app, real_redis, uid) is None


def _plant(app: Any, redis_client: Any, uid: int, raw: str, ttl: int | None = 600) -> None:
    key = attributes_key(app.config["RBAC_ABAC_KEY_PREFIX"], "billing_api", uid)
    redis_client.set(key, raw, ex=ttl)


@pytest.mark.parametrize("stored", ["older", "missing", "corrupt", "no ttl", "empty list"])
def test_what_a_patch_cannot_apply_to_is_rebuilt_in_full(app, api, real_redis, setup, stored):
    uid, _ = setup
    value = cached(app, real_redis, uid)
    data = value.to_dict()
    if stored == "older":
        _plant(app, real_redis, uid, json.dumps({**data, "version": 0}))
    elif stored == "missing":
        real_redis.delete(attributes_key(app.config["RBAC_ABAC_KEY_PREFIX"], "billing_api", uid))
    elif stored == "corrupt":
        _plant(app, real_redis, uid, "{not json")
    elif stored == "no ttl":
        _plant(app, real_redis, uid, json.dumps(data), ttl=None)
    else:  # cjson cannot tell [] from {}: refused, rebuilt
        _plant(app, real_redis, uid, json.dumps({**data, "attributes": {"e": []}}))
    with Reads(app) as reads:
        patch_attributes(api, uid, {"dept": "sales"})
    assert reads.rebuild == 2  # billing_api alone is rebuilt: its roles and its version
    assert same(cached(app, real_redis, uid), rebuilt(app, uid))
    assert cached(app, real_redis, uid).get("dept") == "sales"
    assert cached(app, real_redis, uid, "hr").get("dept") == "sales"


def test_signed_values_are_always_rebuilt(make_app, database_url, real_redis):
    """Lua cannot compute the HMAC: with value-signing keys every change is a full rewrite."""
    app = make_app(database_url, RBAC_ABAC_VALUE_KEYS={"k1": b"k" * 32})
    api = Api(app.test_client())
    api.service()
    uid = api.user("bo", {"dept": "ops"})
    api.roles(uid, ["viewer"])
    with Reads(app) as reads:
        patch_attributes(api, uid, {"dept": "sales"})
    assert reads.rebuild == 2
    value = cached(app, real_redis, uid)  # decodes only with a valid signature
    assert (value.get("dept"), value.version) == ("sales", 2)


def test_a_row_written_before_partial_refresh_is_delivered_in_full(app, api, real_redis, setup):
    uid, services = setup
    with app.app_context():
        _, _, sync = operations.update_attributes(uid, {"dept": "legal"})
        db.session.commit()
        db.session.query(OutboxEntry).update({"patch": None})
        db.session.commit()
        with Reads(app) as reads:
            assert outbox.deliver(sync) is True
    assert reads.rebuild == 2 * len(services) + 2  # every service, the role-less one too
    for service in services:
        assert same(cached(app, real_redis, uid, service), rebuilt(app, uid, service))


# -- the refresh endpoint's "fields" ----------------------------------------------------------


def refresh(api: Api, body: dict[str, Any]) -> Any:
    return api.client.post("/api/refresh-user-cache/", json=body, headers=ADMIN)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ([], "fields must be a non-empty list of: attributes, roles"),
        ("roles", "fields must be a non-empty list of: attributes, roles"),
        (None, "fields must be a non-empty list of: attributes, roles"),
        (["roles", "bogus"], "fields: unknown field(s) 'bogus'; known: attributes, roles"),
        ([1, "x"], "fields: unknown field(s) 'x', 1; known: attributes, roles"),
    ],
)
def test_bad_fields_are_a_400_naming_the_problem(app, api, setup, fields, error):
    uid, _ = setup
    r = refresh(api, {"user_id": uid, "service_name": "billing_api", "fields": fields})
    assert r.status_code == 400
    assert r.json == {"success": False, "error": error}


def test_refresh_with_fields_patches_only_those(app, api, real_redis, setup):
    """The caller says only the roles changed since the previous version: only they are written.

    Proven by a planted attribute in the previous version that the patch leaves alone (a full
    rewrite would replace it).
    """
    uid, _ = setup
    prefix = app.config["RBAC_ABAC_KEY_PREFIX"]
    with app.app_context():
        user = operations.lock_user(uid)
        operations.bump_version(uid, operations.get_service("billing_api"))
        db.session.commit()
    value = cached(app, real_redis, uid)
    planted = {**value.to_dict(), "attributes": {"marker": 1}, "roles": ["admin"]}
    real_redis.set(attributes_key(prefix, "billing_api", uid), json.dumps(planted), ex=600)
    r = refresh(api, {"user_id": uid, "service_name": "billing_api", "fields": ["roles"]})
    assert r.status_code == 200, r.json
    assert r.json["cached"] is True
    after = cached(app, real_redis, uid)
    assert (after.roles, after.version, dict(after.attributes)) == (("viewer",), 2, {"marker": 1})
    # The answer is the whole value from the database.
    assert r.json["attributes"]["attributes"] == {"dept": "ops", "level": 3, "secret": "s"}
    assert user is not None


def test_refresh_with_fields_falls_back_to_a_full_write(app, api, real_redis, setup):
    """Redis holds the current version already (not the previous one): written in full."""
    uid, _ = setup
    prefix = app.config["RBAC_ABAC_KEY_PREFIX"]
    value = cached(app, real_redis, uid)
    planted = {**value.to_dict(), "attributes": {"marker": 1}}
    real_redis.set(attributes_key(prefix, "billing_api", uid), json.dumps(planted), ex=600)
    r = refresh(api, {"user_id": uid, "service_name": "billing_api", "fields": ["attributes"]})
    assert r.status_code == 200, r.json
    assert same(cached(app, real_redis, uid), rebuilt(app, uid))


def test_refresh_with_every_field_is_a_full_refresh(app, api, real_redis, setup, monkeypatch):
    uid, _ = setup
    monkeypatch.setattr(cache, "patch", lambda *a, **k: pytest.fail("patched"))
    r = refresh(
        api, {"user_id": uid, "service_name": "billing_api", "fields": ["roles", "attributes"]}
    )
    assert r.status_code == 200, r.json
    assert same(cached(app, real_redis, uid), rebuilt(app, uid))

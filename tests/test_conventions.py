"""Conventions Flask users expect: error handlers, signal senders, blueprints, teardown."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Iterator

import pytest
from flask import Blueprint, Flask, jsonify
from flask.views import MethodView
from werkzeug.exceptions import Forbidden, ServiceUnavailable, Unauthorized

from flask_rbac_abac import (
    RBACABAC,
    RedisAttributeClient,
    UserAttributes,
    permission,
    protect_blueprint,
    requires_role,
    role,
    signals,
)
from flask_rbac_abac.answers import AuthorizationUnavailable, NotAuthenticated, NotAuthorized
from flask_rbac_abac.model import Invalidation
from flask_rbac_abac.store import delete_attributes, publish_invalidation, store_attributes

from .conftest import IDP, SERVICE, bearer, library_config

DOWN_IDP = "http://idp-down.invalid"


def make_app(fake_idp, key_prefix: str, **config: object) -> tuple[Flask, RBACABAC]:
    app = Flask(__name__)
    app.config.update(library_config(key_prefix, **config))
    rbac = RBACABAC(app, redis=fake_idp.client)

    @app.get("/admin")
    @requires_role("admin")
    def admin():
        return jsonify(ok=True)

    return app, rbac


@pytest.fixture
def app(fake_idp, key_prefix) -> Iterator[Flask]:
    fake_idp.add(1, roles=["admin"], permissions=[])
    fake_idp.add(2, roles=["viewer"], permissions=[])
    app, rbac = make_app(fake_idp, key_prefix)
    yield app
    rbac.close(app)


# -- 1. the answers are HTTP exceptions error handlers can replace ----------------------------


def test_the_answers_are_werkzeug_exceptions() -> None:
    assert issubclass(NotAuthenticated, Unauthorized)
    assert issubclass(NotAuthorized, Forbidden)
    assert issubclass(AuthorizationUnavailable, ServiceUnavailable)


def test_without_a_handler_the_body_is_the_documented_json(app) -> None:
    client = app.test_client()
    response = client.get("/admin")
    assert response.status_code == 401
    assert response.json == {
        "success": False,
        "error": "authentication required",
        "reason": "no_identity",
    }
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.mimetype == "application/json"
    response = client.get("/admin", headers=bearer(2))
    assert response.status_code == 403
    assert response.json == {
        "success": False,
        "error": "missing role: one of admin",
        "reason": "missing_role",
    }


def test_app_error_handlers_replace_the_401_403_and_503_bodies(fake_idp, key_prefix) -> None:
    fake_idp.add(2, roles=["viewer"], permissions=[])
    app, rbac = make_app(fake_idp, key_prefix)
    seen: list[object] = []

    @app.errorhandler(401)
    def unauthorized(e):
        seen.append(e)
        return f"please log in ({e.reason})", 401, {"WWW-Authenticate": "Bearer"}

    @app.errorhandler(403)
    def forbidden(e):
        seen.append(e)
        return f"no: {e.reason}", 403

    @app.errorhandler(503)
    def unavailable(e):
        seen.append(e)
        return f"later: {e.reason}", 503

    try:
        client = app.test_client()
        response = client.get("/admin")
        assert (response.status_code, response.text) == (401, "please log in (no_identity)")
        assert response.headers["WWW-Authenticate"] == "Bearer"
        response = client.get("/admin", headers=bearer(2))
        assert (response.status_code, response.text) == (403, "no: missing_role")
        assert isinstance(seen[0], NotAuthenticated) and isinstance(seen[1], NotAuthorized)
        assert seen[1].error == "missing role: one of admin"
    finally:
        rbac.close(app)

    down, down_rbac = make_app(fake_idp, key_prefix, IDENTITY_PROVIDER_URL=DOWN_IDP)
    down.register_error_handler(503, unavailable)
    try:
        response = down.test_client().get("/admin", headers=bearer(3))
        assert (response.status_code, response.text) == (503, "later: attributes_unavailable")
        assert isinstance(seen[2], AuthorizationUnavailable)
    finally:
        down_rbac.close(down)


def test_blueprint_error_handlers_replace_the_answers_of_its_views(fake_idp, key_prefix) -> None:
    fake_idp.add(2, roles=["viewer"], permissions=[])
    app = Flask(__name__)
    app.config.update(library_config(key_prefix))
    rbac = RBACABAC(app, redis=fake_idp.client)
    bp = Blueprint("admin", __name__, url_prefix="/admin")

    @bp.get("/users")
    @requires_role("admin")
    def users():
        return jsonify(ok=True)

    @bp.errorhandler(401)
    def bp_unauthorized(e):
        return jsonify(blueprint=True, why=e.reason), 401

    @bp.errorhandler(403)
    def bp_forbidden(e):
        return jsonify(blueprint=True, why=e.reason), 403

    @app.get("/other")
    @requires_role("admin")
    def other():
        return jsonify(ok=True)

    app.register_blueprint(bp)
    try:
        client = app.test_client()
        response = client.get("/admin/users")
        assert response.status_code == 401
        assert response.json == {"blueprint": True, "why": "no_identity"}
        response = client.get("/admin/users", headers=bearer(2))
        assert response.status_code == 403
        assert response.json == {"blueprint": True, "why": "missing_role"}
        response = client.get("/other", headers=bearer(2))  # outside the blueprint: the default
        assert response.status_code == 403
        assert response.json["reason"] == "missing_role"
        assert response.json["success"] is False
    finally:
        rbac.close(app)


# -- 2. every signal is sent with the app as sender ------------------------------------------


class Received:
    """A receiver that records what it got, and can be waited on (the subscriber's thread)."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, dict[str, object]]] = []
        self.event = threading.Event()

    def __call__(self, sender: object, **kwargs: object) -> None:
        self.calls.append((sender, kwargs))
        self.event.set()


def test_decision_made_and_attributes_refreshed_come_from_the_app(app) -> None:
    decided, refreshed = Received(), Received()
    with (
        signals.decision_made.connected_to(decided, sender=app),
        signals.attributes_refreshed.connected_to(refreshed, sender=app),
    ):
        assert app.test_client().get("/admin", headers=bearer(1)).status_code == 200
    assert [sender for sender, _ in decided.calls] == [app]
    assert decided.calls[0][1]["allowed"] is True
    assert [sender for sender, _ in refreshed.calls] == [app]
    assert refreshed.calls[0][1]["manual"] is False


def test_stale_served_comes_from_the_app(fake_idp, key_prefix) -> None:
    app, rbac = make_app(
        fake_idp,
        key_prefix,
        IDENTITY_PROVIDER_URL=DOWN_IDP,
        RBAC_ABAC_LOCAL_CACHE_TTL=1,
        RBAC_ABAC_MAX_STALE=300,
    )
    attrs = UserAttributes(user_id=1, service_name=SERVICE, roles=("admin",))
    store_attributes(fake_idp.client, attrs, 60, key_prefix)
    stale = Received()
    try:
        client = app.test_client()
        assert client.get("/admin", headers=bearer(1)).status_code == 200  # L2 hit, into L1
        delete_attributes(fake_idp.client, key_prefix, SERVICE, 1)
        time.sleep(1.2)  # past the L1 freshness; the IdP is down: the stale value is served
        with signals.stale_served.connected_to(stale, sender=app):
            assert client.get("/admin", headers=bearer(1)).status_code == 200
        assert [sender for sender, _ in stale.calls] == [app]
        assert stale.calls[0][1]["attributes"] == attrs
    finally:
        rbac.close(app)


def test_cache_invalidated_comes_from_the_app_from_the_subscriber_thread(
    fake_idp, key_prefix
) -> None:
    app, rbac = make_app(fake_idp, key_prefix, RBAC_ABAC_INVALIDATION=True)
    invalidated = Received()
    try:
        with signals.cache_invalidated.connected_to(invalidated, sender=app):
            client = rbac._state(app).client
            client.listen()
            assert client.subscriber is not None
            assert client.subscriber.wait_until_subscribed(5.0)
            publish_invalidation(fake_idp.client, Invalidation(7, SERVICE, 3), key_prefix)
            assert invalidated.event.wait(5.0)
        assert invalidated.calls == [(app, {"user_id": 7, "service_name": SERVICE, "version": 3})]
    finally:
        rbac.close(app)


def test_a_standalone_client_sends_itself(fake_idp, key_prefix) -> None:
    client = RedisAttributeClient(
        service_name=SERVICE,
        identity_provider_url=IDP,
        key_prefix=key_prefix,
        redis=fake_idp.client,
        invalidation=False,
    )
    fake_idp.add(1, roles=["admin"], permissions=[])
    refreshed = Received()
    try:
        assert client.owner is None
        with signals.attributes_refreshed.connected_to(refreshed, sender=client):
            assert client.get_user_attributes(1).roles == ("admin",)
        assert [sender for sender, _ in refreshed.calls] == [client]
    finally:
        client.close()


# -- 3. a standalone client hears revocations without listen() -------------------------------


@pytest.mark.redis
def test_a_standalone_client_sees_a_revocation_without_listen(real_redis, key_prefix) -> None:
    admin = UserAttributes(user_id=9, service_name=SERVICE, roles=("admin",), version=1)
    store_attributes(real_redis, admin, 60, key_prefix)
    client = RedisAttributeClient(
        service_name=SERVICE,
        key_prefix=key_prefix,
        redis=real_redis,
        invalidation=True,
        auto_refresh=False,
        local_cache_ttl=300,  # without the subscriber, L1 would keep the admin for 5 minutes
    )
    try:
        assert client.get_user_attributes(9).roles == ("admin",)  # L1 filled; no listen() call
        assert client.subscriber is not None
        assert client.subscriber.wait_until_subscribed(5.0)
        assert client.get_user_attributes(9).roles == ("admin",)  # (re)filled after subscribing
        revoked = UserAttributes(user_id=9, service_name=SERVICE, roles=(), version=2)
        store_attributes(real_redis, revoked, 60, key_prefix)  # as the IdP does: write, announce
        publish_invalidation(real_redis, Invalidation(9, SERVICE, 2), key_prefix)
        deadline = time.monotonic() + 1.0
        while client.get_user_attributes(9).roles and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.get_user_attributes(9).roles == ()
    finally:
        client.close()


# -- 4. one rule protects a whole blueprint ---------------------------------------------------


def admin_app(fake_idp, key_prefix: str, **config: object) -> tuple[Flask, RBACABAC]:
    """An admin blueprint of three views under one rule, and a guarded app around it."""
    app = Flask(__name__)
    app.config.update(library_config(key_prefix, RBAC_ABAC_REQUIRE_AUTHORIZATION=True, **config))
    rbac = RBACABAC(app, redis=fake_idp.client)
    admin = protect_blueprint(Blueprint("admin", __name__, url_prefix="/admin"), role("admin"))

    @admin.get("/users")
    def users():
        return jsonify(view="users")

    @admin.post("/users")
    def create_user():
        return jsonify(view="create"), 201

    class Settings(MethodView):
        def get(self):
            return jsonify(view="settings")

    admin.add_url_rule("/settings", view_func=Settings.as_view("settings"))

    @app.get("/plain")
    def plain():
        return jsonify(view="plain")

    app.register_blueprint(admin)
    return app, rbac


ADMIN_VIEWS = [
    ("GET", "/admin/users", 200),
    ("POST", "/admin/users", 201),
    ("GET", "/admin/settings", 200),
]


def test_a_protected_blueprint_allows_and_denies_each_of_its_views(fake_idp, key_prefix) -> None:
    fake_idp.add(1, roles=["admin"], permissions=[])
    fake_idp.add(2, roles=["viewer"], permissions=[])
    app, rbac = admin_app(fake_idp, key_prefix)
    try:
        client = app.test_client()
        for method, path, status in ADMIN_VIEWS:
            assert client.open(path, method=method, headers=bearer(1)).status_code == status
            denied = client.open(path, method=method, headers=bearer(2))
            assert denied.status_code == 403
            assert denied.json == {
                "success": False,
                "error": "missing role: one of admin",
                "reason": "missing_role",
            }
            anonymous = client.open(path, method=method)
            assert anonymous.status_code == 401
            assert anonymous.json["reason"] == "no_identity"
            preflight = client.open(path, method="OPTIONS")  # a CORS preflight passes
            assert preflight.status_code == 200
        # The guard is on: the blueprint's views count as protected, a bare view is refused.
        plain = client.get("/plain", headers=bearer(1))
        assert (plain.status_code, plain.json["reason"]) == (403, "no_rule")
    finally:
        rbac.close(app)


def test_a_protected_blueprint_answers_503_when_attributes_are_unavailable(
    fake_idp, key_prefix
) -> None:
    app, rbac = admin_app(fake_idp, key_prefix, IDENTITY_PROVIDER_URL=DOWN_IDP)
    try:
        client = app.test_client()
        for method, path, _ in ADMIN_VIEWS:
            response = client.open(path, method=method, headers=bearer(1))
            assert response.status_code == 503
            assert response.json["reason"] == "attributes_unavailable"
    finally:
        rbac.close(app)


def test_nested_blueprints_inherit_the_rule_and_add_their_own(fake_idp, key_prefix) -> None:
    fake_idp.add(1, roles=["admin"], permissions=[])
    fake_idp.add(2, roles=["admin"], permissions=["audit:read"])
    app = Flask(__name__)
    app.config.update(library_config(key_prefix, RBAC_ABAC_REQUIRE_AUTHORIZATION=True))
    rbac = RBACABAC(app, redis=fake_idp.client)
    admin = protect_blueprint(Blueprint("admin", __name__, url_prefix="/admin"), role("admin"))
    audit = protect_blueprint(
        Blueprint("audit", __name__, url_prefix="/audit"), permission("audit:read")
    )

    @audit.get("/log")
    def log():
        return jsonify(view="log")

    admin.register_blueprint(audit)
    app.register_blueprint(admin)
    try:
        client = app.test_client()
        assert client.get("/admin/audit/log", headers=bearer(2)).status_code == 200
        denied = client.get("/admin/audit/log", headers=bearer(1))
        assert (denied.status_code, denied.json["reason"]) == (403, "missing_permission")
        result = app.test_cli_runner().invoke(args=["rbac-abac", "routes"])
        assert "role('admin') & permission('audit:read')" in result.output
    finally:
        rbac.close(app)


def test_flask_routes_shows_the_blueprint_rule(fake_idp, key_prefix) -> None:
    app, rbac = admin_app(fake_idp, key_prefix)
    try:
        result = app.test_cli_runner().invoke(args=["rbac-abac", "routes"])
        lines = result.output.splitlines()
        table = {tuple(line.split(None, 3)[:3]): line.split(None, 3)[3] for line in lines[:-1]}
        assert table == {
            ("GET", "/admin/settings", "admin.settings"): "role('admin')",
            ("GET", "/admin/users", "admin.users"): "role('admin')",
            ("POST", "/admin/users", "admin.create_user"): "role('admin')",
            ("GET", "/plain", "plain"): "UNPROTECTED",
            ("GET", "/static/<path:filename>", "static"): "static files (not guarded)",
        }
        assert lines[-1] == "5 routes: 3 protected, 0 public, 1 unprotected, 0 misplaced, 1 static"
        assert result.exit_code == 1  # the guard is on and /plain has no rule
    finally:
        rbac.close(app)


def test_protect_blueprint_needs_a_rule() -> None:
    with pytest.raises(TypeError, match="needs a rule, got str"):
        protect_blueprint(Blueprint("x", __name__), "admin")  # type: ignore[arg-type]


# -- 5. teardown: the client is closed with the app -------------------------------------------


def test_rbac_close_stops_the_subscriber_and_is_idempotent(fake_idp, key_prefix) -> None:
    app, rbac = make_app(fake_idp, key_prefix, RBAC_ABAC_INVALIDATION=True)
    client = rbac._state(app).client
    assert app.test_client().get("/admin").status_code == 401  # the first request starts it
    assert client.subscriber is not None
    assert client.subscriber.wait_until_subscribed(5.0)
    thread = client.subscriber._thread
    assert thread is not None and thread.is_alive()
    rbac.close(app)
    assert not thread.is_alive()
    rbac.close(app)  # again: nothing left to close, no error
    with app.app_context():
        rbac.close()  # the current app's


def test_the_client_is_closed_when_the_app_is_garbage_collected(fake_idp, key_prefix) -> None:
    app, rbac = make_app(fake_idp, key_prefix, RBAC_ABAC_INVALIDATION=True)
    client = rbac._state(app).client
    assert app.test_client().get("/admin").status_code == 401
    assert client.subscriber is not None
    assert client.subscriber.wait_until_subscribed(5.0)
    thread = client.subscriber._thread
    assert thread is not None
    collected = weakref.ref(app)
    del app
    gc.collect()
    assert collected() is None  # the client holds its app weakly: nothing keeps the app alive
    assert not thread.is_alive()  # the finalizer closed the client
    assert client.owner is None

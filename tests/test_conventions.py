"""Conventions Flask users expect: error handlers, signal senders, blueprints, teardown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Blueprint, Flask, jsonify
from werkzeug.exceptions import Forbidden, ServiceUnavailable, Unauthorized

from flask_rbac_abac import RBACABAC, requires_role
from flask_rbac_abac.answers import AuthorizationUnavailable, NotAuthenticated, NotAuthorized

from .conftest import bearer, library_config

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

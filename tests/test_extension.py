"""The extension: identity, decorators, composed rules and the 401/403/503 answers."""

from __future__ import annotations

import logging
import time

import jwt
import pytest
import requests
import responses
from flask import Flask, jsonify

from flask_rbac_abac import (
    RBACABAC,
    UserAttributes,
    attribute,
    current_attributes,
    current_identity,
    permission,
    predicate,
    requires,
    requires_attribute,
    requires_permission,
    requires_role,
    role,
    signals,
)

from .conftest import IDP, JWT_SECRET, SERVICE, bearer, make_token

INVOICES = {1: {"id": 1, "department": "finance"}, 2: {"id": 2, "department": "sales"}}


def build_app(backend, key_prefix, rbac: RBACABAC | None = None, **config) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SERVICE_NAME=SERVICE,
        IDENTITY_PROVIDER_URL=IDP,
        RBAC_ABAC_JWT_SECRET=JWT_SECRET,
        RBAC_ABAC_KEY_PREFIX=key_prefix,
        RBAC_ABAC_INVALIDATION=False,
    )
    app.config.update(config)
    rbac = rbac or RBACABAC()
    rbac.init_app(app, redis=backend)

    @app.get("/invoices")
    @requires_permission("invoice:read")
    def list_invoices():
        return jsonify(
            user=current_attributes.user_id, identity=current_identity._get_current_object()
        )

    @app.post("/invoices")
    @requires_role("admin", "accountant")
    def create_invoice():
        return jsonify(created=True), 201

    @app.get("/reports")
    @requires_attribute("clearance", lambda v: v >= 3)
    async def reports():
        return jsonify(report="ok")

    @app.get("/finance")
    @requires_attribute("department", "finance")
    def finance():
        return jsonify(ok=True)

    @app.get("/invoices/<int:invoice_id>")
    @requires(
        role("admin")
        | predicate(
            lambda user, invoice: invoice["department"] == user.get("department"),
            "invoice belongs to another department",
        ),
        resource=lambda invoice_id: INVOICES[invoice_id],
    )
    def show_invoice(invoice_id):
        return jsonify(INVOICES[invoice_id])

    @app.get("/composed")
    @requires(role("admin") | (permission("invoice:read") & attribute("region", "eu")))
    def composed():
        return jsonify(ok=True)

    @app.get("/not-intern")
    @requires(~role("intern"))
    def not_intern():
        return jsonify(ok=True)

    @app.get("/broken")
    @requires(predicate(lambda user, resource: 1 / 0))
    def broken():
        return jsonify(ok=True)

    @app.get("/context")
    def context():
        with role("admin"):
            return jsonify(inside=True)

    @app.get("/public")
    def public():
        return jsonify(public=True)

    return app


@pytest.fixture
def app(backend, key_prefix, idp):
    idp.add(1, roles=["admin"], permissions=["invoice:read"], attributes={"clearance": 5})
    idp.add(
        2,
        roles=["accountant"],
        permissions=["invoice:read"],
        attributes={"department": "finance", "clearance": 2, "region": "eu"},
    )
    idp.add(3, roles=["viewer"], permissions=[], attributes={"department": "sales"})
    idp.add(4, roles=[], permissions=[], attributes={"department": "support"})
    idp.add(5, roles=["intern"], permissions=["invoice:read"], attributes={"region": "us"})
    app = build_app(backend, key_prefix)
    yield app
    with app.app_context():
        app.extensions["rbac_abac"].close(app)


@pytest.fixture
def client(app):
    return app.test_client()


def test_no_identity_is_401_with_json(client) -> None:
    response = client.get("/invoices")
    assert response.status_code == 401
    assert response.json == {
        "success": False,
        "error": "authentication required",
        "reason": "no_identity",
    }
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer not-a-jwt",
        "Basic dXNlcjpwYXNz",
        "Bearer " + make_token(1, secret="another-secret-" + "y" * 32),
        "Bearer " + make_token(1, exp=int(time.time()) - 10),
        "Bearer " + make_token(1, aud="another-service"),
        "Bearer " + make_token(1, iss="someone-else"),
        "Bearer "
        + jwt.encode({"sub": "1", "aud": "rbac-abac", "iss": "rbac-abac-idp"}, None, "none"),
        "Bearer " + "x" * 9000,
    ],
)
def test_invalid_tokens_are_401(client, idp, header) -> None:
    response = client.get("/invoices", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json["reason"] == "no_identity"
    assert idp.requests == []


def test_permission_allow_and_deny(client) -> None:
    response = client.get("/invoices", headers=bearer(2))
    assert response.status_code == 200
    assert response.json == {"user": 2, "identity": 2}
    response = client.get("/invoices", headers=bearer(3))
    assert response.status_code == 403
    assert response.json == {
        "success": False,
        "error": "missing permission: invoice:read",
        "reason": "missing_permission",
    }


def test_role_any_of(client) -> None:
    assert client.post("/invoices", headers=bearer(1)).status_code == 201
    assert client.post("/invoices", headers=bearer(2)).status_code == 201
    response = client.post("/invoices", headers=bearer(3))
    assert response.status_code == 403
    assert response.json["error"] == "missing role: one of admin, accountant"


def test_no_roles_in_this_service(client) -> None:
    response = client.post("/invoices", headers=bearer(4))
    assert response.status_code == 403
    assert response.json == {
        "success": False,
        "error": "user has no roles in service billing_api",
        "reason": "no_roles",
    }


def test_attribute_predicate_on_an_async_view(client) -> None:
    response = client.get("/reports", headers=bearer(1))
    assert response.status_code == 200 and response.json == {"report": "ok"}
    response = client.get("/reports", headers=bearer(2))
    assert response.status_code == 403
    assert response.json["reason"] == "attribute_mismatch"
    response = client.get("/reports", headers=bearer(3))
    assert response.json["error"] == "missing attribute: clearance"


def test_attribute_plain_value(client) -> None:
    assert client.get("/finance", headers=bearer(2)).status_code == 200
    assert client.get("/finance", headers=bearer(3)).status_code == 403


def test_abac_resource_rule(client) -> None:
    assert client.get("/invoices/1", headers=bearer(2)).status_code == 200
    response = client.get("/invoices/2", headers=bearer(2))
    assert response.status_code == 403
    assert "invoice belongs to another department" in response.json["error"]
    assert client.get("/invoices/2", headers=bearer(1)).status_code == 200


def test_resource_loader_error_denies(client) -> None:
    response = client.get("/invoices/99", headers=bearer(1))
    assert response.status_code == 403
    assert response.json["reason"] == "rule_error"


def test_composed_rules(client) -> None:
    assert client.get("/composed", headers=bearer(1)).status_code == 200
    assert client.get("/composed", headers=bearer(2)).status_code == 200
    assert client.get("/composed", headers=bearer(5)).status_code == 403
    assert client.get("/not-intern", headers=bearer(2)).status_code == 200
    assert client.get("/not-intern", headers=bearer(5)).status_code == 403


def test_exception_in_rule_is_403_and_logged(client, caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="flask_rbac_abac"):
        response = client.get("/broken", headers=bearer(1))
    assert response.status_code == 403
    assert response.json == {
        "success": False,
        "error": "the authorization rule failed",
        "reason": "rule_error",
    }
    assert "ZeroDivisionError" in caplog.text


def test_rule_as_context_manager(client) -> None:
    assert client.get("/context", headers=bearer(1)).json == {"inside": True}
    assert client.get("/context", headers=bearer(2)).status_code == 403
    assert client.get("/context").status_code == 401


def test_unprotected_views_need_nothing(client, idp) -> None:
    assert client.get("/public").json == {"public": True}
    assert idp.requests == []


def test_options_passes_through(client, idp) -> None:
    assert client.options("/invoices").status_code == 200
    assert idp.requests == []


def test_unknown_user_is_403(client) -> None:
    response = client.get("/invoices", headers=bearer(42))
    assert response.status_code == 403
    assert response.json == {
        "success": False,
        "error": "user 42 has no attributes in service billing_api",
        "reason": "unknown_user",
    }


def test_idp_down_and_nothing_cached_is_503(backend, key_prefix) -> None:
    app = build_app(backend, key_prefix)
    with responses.RequestsMock() as mock_idp:
        mock_idp.add("POST", IDP + "/api/refresh-user-cache/", body=requests.ConnectionError())
        response = app.test_client().get("/invoices", headers=bearer(1))
    assert response.status_code == 503
    assert response.json == {
        "success": False,
        "error": "attributes temporarily unavailable",
        "reason": "attributes_unavailable",
    }


def test_revoked_role_is_denied_after_invalidation(app, client, idp) -> None:
    assert client.post("/invoices", headers=bearer(2)).status_code == 201
    idp.add(2, roles=["viewer"], version=2)
    with app.app_context():
        app.extensions["rbac_abac"].client.invalidate(2)
    assert client.post("/invoices", headers=bearer(2)).status_code == 403


def test_identity_loader_replaces_jwt(backend, key_prefix, idp) -> None:
    idp.add(9, roles=["admin"])
    rbac = RBACABAC()

    @rbac.identity_loader
    def from_header():
        return __import__("flask").request.headers.get("X-User")

    app = build_app(backend, key_prefix, rbac=rbac)
    client = app.test_client()
    assert client.post("/invoices", headers={"X-User": "9"}).status_code == 201
    assert client.post("/invoices", headers={"X-User": "bad:id"}).status_code == 401
    assert client.post("/invoices").status_code == 401


def test_identity_loader_exception_is_401(backend, key_prefix) -> None:
    rbac = RBACABAC()

    @rbac.identity_loader
    def explode():
        raise RuntimeError("boom")

    app = build_app(backend, key_prefix, rbac=rbac)
    assert app.test_client().get("/invoices").status_code == 401


def test_without_jwt_key_everything_protected_is_401(backend, key_prefix) -> None:
    app = build_app(backend, key_prefix, RBAC_ABAC_JWT_SECRET=None)
    assert app.test_client().get("/invoices", headers=bearer(1)).status_code == 401


def test_rs256_tokens(backend, key_prefix, idp) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    idp.add(1, roles=["admin"], permissions=["invoice:read"])
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    app = build_app(
        backend, key_prefix, RBAC_ABAC_JWT_SECRET=None, RBAC_ABAC_JWT_PUBLIC_KEY=public.decode()
    )
    claims = {"sub": "1", "aud": "rbac-abac", "iss": "rbac-abac-idp", "exp": time.time() + 60}
    token = jwt.encode(claims, key, algorithm="RS256")
    client = app.test_client()
    assert client.get("/invoices", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    hs = {"Authorization": "Bearer " + make_token(1)}
    assert client.get("/invoices", headers=hs).status_code == 401


def test_a_verified_token_is_not_verified_again_while_cached(app, client) -> None:
    headers = bearer(1)
    with pytest.MonkeyPatch.context() as patch:
        assert client.get("/invoices", headers=headers).status_code == 200
        patch.setattr(jwt, "decode", lambda *a, **k: pytest.fail("token verified twice"))
        assert client.get("/invoices", headers=headers).status_code == 200


def test_two_apps_share_one_extension_and_stay_isolated(backend, key_prefix, idp) -> None:
    rbac = RBACABAC()
    idp.add(1, roles=["admin"], permissions=["invoice:read"])
    idp.add(1, service="other_api", roles=[], permissions=[])
    first = build_app(backend, key_prefix, rbac=rbac)
    second = build_app(backend, key_prefix, rbac=rbac, RBAC_ABAC_CACHE_TTL=60)
    second.config["SERVICE_NAME"] = "ignored-after-init"
    third = Flask("third")
    third.config.update(
        SERVICE_NAME="other_api",
        IDENTITY_PROVIDER_URL=IDP,
        RBAC_ABAC_JWT_SECRET=JWT_SECRET,
        RBAC_ABAC_KEY_PREFIX=key_prefix,
        RBAC_ABAC_INVALIDATION=False,
    )
    rbac.init_app(third, redis=backend)

    @third.get("/invoices")
    @requires_permission("invoice:read")
    def other():
        return jsonify(ok=True)

    assert first.test_client().get("/invoices", headers=bearer(1)).status_code == 200
    assert third.test_client().get("/invoices", headers=bearer(1)).status_code == 403
    with first.app_context():
        first_client = rbac.client
    with second.app_context():
        assert rbac.client is not first_client and rbac.client.ttl == 60
    with third.app_context():
        assert rbac.client.service_name == "other_api"
        assert rbac.stats()["denied"] == 1
    with first.app_context():
        assert rbac.stats()["allowed"] == 1 and rbac.stats()["denied"] == 0


def test_decision_signal_and_audit_log_without_token(app, client, caplog) -> None:
    seen = []

    def receiver(sender, **extra):
        seen.append((sender, extra["allowed"], extra["reason"]))

    signals.decision_made.connect(receiver, app)
    headers = bearer(3)
    try:
        with caplog.at_level(logging.DEBUG, logger="flask_rbac_abac"):
            client.get("/invoices", headers=headers)
    finally:
        signals.decision_made.disconnect(receiver, app)
    assert seen == [(app, False, "missing permission: invoice:read")]
    assert "deny user=3 service=billing_api endpoint=list_invoices" in caplog.text
    assert headers["Authorization"].split()[1] not in caplog.text


def test_current_attributes_in_unprotected_view_loads_on_demand(backend, key_prefix, idp) -> None:
    idp.add(1, roles=["admin"])
    app = build_app(backend, key_prefix)

    @app.get("/me")
    def me():
        attrs: UserAttributes = current_attributes._get_current_object()
        return jsonify(attrs.to_dict())

    client = app.test_client()
    assert client.get("/me", headers=bearer(1)).json["roles"] == ["admin"]
    assert client.get("/me").status_code == 401


def test_decorator_without_extension_is_a_clear_error() -> None:
    app = Flask(__name__)

    @app.get("/x")
    @requires_role("admin")
    def x():
        return "x"

    app.config["PROPAGATE_EXCEPTIONS"] = True
    with pytest.raises(RuntimeError, match="not initialised on this app"):
        app.test_client().get("/x")


def test_redis_down_is_served_through_the_idp(free_port, key_prefix, idp) -> None:
    idp.add(1, roles=["admin"], permissions=["invoice:read"])
    app = build_app(None, key_prefix, RBAC_ABAC_REDIS_URL=f"redis://127.0.0.1:{free_port}/0")
    client = app.test_client()
    started = time.perf_counter()
    assert client.get("/invoices", headers=bearer(1)).status_code == 200
    assert client.get("/invoices", headers=bearer(1)).status_code == 200
    assert time.perf_counter() - started < 1.0
    with app.app_context():
        stats = app.extensions["rbac_abac"].stats()
        app.extensions["rbac_abac"].close(app)
    assert stats["redis_errors"] >= 1 and stats["l1_hits"] == 1

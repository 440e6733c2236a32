"""billing_api (example_service) at unit level: fakeredis for Redis, `responses` for the IdP."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import requests
import responses
from flask import Flask
from flask.testing import FlaskClient

from example_service import create_app
from flask_rbac_abac import public
from tests.conftest import IDP, JWT_SECRET, FakeIdP, bearer

ADMIN, ACCOUNTANT, VIEWER, NOBODY, NO_CLEARANCE = 1, 2, 3, 4, 5
INVOICE_PERMS = ["invoice:read", "invoice:write"]


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def idp_mock(fake_redis: fakeredis.FakeRedis, key_prefix: str) -> Iterator[FakeIdP]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = FakeIdP(mock, fake_redis, key_prefix)
        fake.add(
            ADMIN,
            roles=["admin"],
            permissions=[*INVOICE_PERMS, "report:read"],
            attributes={"department": "finance", "clearance": 5},
        )
        fake.add(
            ACCOUNTANT,
            roles=["accountant"],
            permissions=INVOICE_PERMS,
            attributes={"department": "finance", "clearance": 2},
        )
        fake.add(
            VIEWER,
            roles=["viewer"],
            permissions=["invoice:read"],
            attributes={"department": "sales", "clearance": 3},
        )
        fake.add(NOBODY, attributes={"department": "support", "clearance": 1})
        fake.add(NO_CLEARANCE, roles=["viewer"], permissions=["invoice:read"])
        fake.mock = mock  # type: ignore[attr-defined]
        yield fake


def config(key_prefix: str, **extra: Any) -> dict[str, Any]:
    return {
        "TESTING": True,
        "IDENTITY_PROVIDER_URL": IDP,
        "RBAC_ABAC_JWT_SECRET": JWT_SECRET,
        "RBAC_ABAC_KEY_PREFIX": key_prefix,
        "RBAC_ABAC_SERVICE_TOKEN": "service-token-for-tests",
        "RBAC_ABAC_INVALIDATION": False,
        "RBAC_ABAC_CACHE_TTL": 86400,
        **extra,
    }


@pytest.fixture
def app(fake_redis: fakeredis.FakeRedis, idp_mock: FakeIdP, key_prefix: str) -> Iterator[Flask]:
    app = create_app(config(key_prefix), redis=fake_redis)
    yield app
    app.extensions["rbac_abac"].close(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def as_user(user_id: int) -> dict[str, str]:
    return bearer(user_id)


# -- public and error endpoints ------------------------------------------------------------


def probed(app: Flask) -> None:
    """Run the health probes now, so the next ``/healthz`` reports their result."""
    from example_service import rbac

    with app.app_context():
        rbac.client.health.probe_all()


def test_healthz_is_public_and_says_only_ok_or_degraded(
    app: Flask, client: FlaskClient, idp_mock: FakeIdP
) -> None:
    idp_mock.mock.add("GET", IDP + "/healthz", json={"status": "ok"})  # type: ignore[attr-defined]
    probed(app)
    response = client.get("/healthz")
    assert response.status_code == 200
    # No subscriber here: these tests run with invalidation off.
    assert response.get_json() == {"status": "ok", "redis": "ok", "idp": "ok"}


def test_healthz_is_503_when_the_idp_is_down(
    app: Flask, client: FlaskClient, idp_mock: FakeIdP
) -> None:
    idp_mock.mock.add(  # type: ignore[attr-defined]
        "GET", IDP + "/healthz", body=requests.ConnectionError("refused 10.0.0.7:8000")
    )
    probed(app)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["idp"] == "degraded"
    assert "10.0.0.7" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/invoices"),
        ("POST", "/invoices"),
        ("GET", "/invoices/1"),
        ("GET", "/reports"),
        ("GET", "/whoami"),
        ("GET", "/stats"),
    ],
)
def test_protected_routes_need_a_token(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method, json={})
    assert response.status_code == 401
    assert response.get_json() == {
        "success": False,
        "error": "authentication required",
        "reason": "no_identity",
    }


def test_a_forged_token_is_401(client: FlaskClient) -> None:
    from tests.conftest import make_token

    token = make_token(ADMIN, secret="another-secret-" + "y" * 32)
    response = client.get("/invoices", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_unknown_route_is_json_404(client: FlaskClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.is_json
    assert response.get_json()["success"] is False


def test_wrong_method_is_json_405_with_allow(client: FlaskClient) -> None:
    response = client.delete("/invoices")
    assert response.status_code == 405
    assert response.get_json()["success"] is False
    assert "GET" in response.headers["Allow"]


def test_oversized_body_is_json_413(client: FlaskClient) -> None:
    response = client.post(
        "/invoices",
        data=b"x" * (65 * 1024),
        headers={**as_user(ADMIN), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.get_json()["success"] is False


def test_unexpected_errors_are_json_500(app: Flask) -> None:
    @app.get("/boom")
    @public  # billing_api refuses a view with neither a rule nor @public
    def boom() -> str:
        raise RuntimeError("boom")

    app.config["TESTING"] = False  # let the handler run instead of propagating
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {"success": False, "error": "internal server error"}


# -- GET /invoices (permission) -------------------------------------------------------------


@pytest.mark.parametrize("user", [ADMIN, ACCOUNTANT, VIEWER])
def test_list_invoices_needs_invoice_read(client: FlaskClient, user: int) -> None:
    response = client.get("/invoices", headers=as_user(user))
    assert response.status_code == 200
    body = response.get_json()
    assert body["success"] is True
    assert body["count"] == len(body["invoices"]) == 5


def test_list_invoices_filters_by_department(client: FlaskClient) -> None:
    response = client.get("/invoices?department=sales", headers=as_user(VIEWER))
    assert {i["department"] for i in response.get_json()["invoices"]} == {"sales"}


def test_user_without_roles_is_denied(client: FlaskClient) -> None:
    response = client.get("/invoices", headers=as_user(NOBODY))
    assert response.status_code == 403
    body = response.get_json()
    assert body["success"] is False
    assert body["reason"] == "no_roles"
    assert body["error"] == "user has no roles in service billing_api"


def test_unknown_user_is_403(client: FlaskClient) -> None:
    response = client.get("/invoices", headers=as_user(999))
    assert response.status_code == 403
    assert response.get_json()["reason"] == "unknown_user"


# -- POST /invoices (role) ------------------------------------------------------------------


def test_accountant_creates_an_invoice_in_own_department(client: FlaskClient) -> None:
    response = client.post(
        "/invoices", json={"customer": " Wayne ", "amount": 12}, headers=as_user(ACCOUNTANT)
    )
    assert response.status_code == 201
    invoice = response.get_json()["invoice"]
    assert invoice == {
        "id": 6,
        "customer": "Wayne",
        "amount": 12.0,
        "currency": "EUR",
        "department": "finance",
        "created_by": ACCOUNTANT,
    }
    assert client.get("/invoices/6", headers=as_user(ACCOUNTANT)).status_code == 200


def test_viewer_cannot_create(client: FlaskClient) -> None:
    body = {"customer": "X", "amount": 1}
    response = client.post("/invoices", json=body, headers=as_user(VIEWER))
    assert response.status_code == 403
    assert response.get_json()["success"] is False


def test_accountant_cannot_create_for_another_department(client: FlaskClient) -> None:
    response = client.post(
        "/invoices",
        json={"customer": "X", "amount": 1, "department": "sales"},
        headers=as_user(ACCOUNTANT),
    )
    assert response.status_code == 403
    assert response.get_json()["error"] == "only admins create invoices for another department"


def test_admin_creates_for_any_department(client: FlaskClient) -> None:
    response = client.post(
        "/invoices",
        json={"customer": "X", "amount": 1, "department": "sales", "currency": "USD"},
        headers=as_user(ADMIN),
    )
    assert response.status_code == 201
    assert response.get_json()["invoice"]["department"] == "sales"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (None, "request body must be a JSON object"),
        ([1, 2], "request body must be a JSON object"),
        ({"customer": "X", "amount": 1, "colour": "red"}, "unknown field(s): colour"),
        ({"amount": 1}, "customer must be a non-empty string of at most 200 characters"),
        ({"customer": "  ", "amount": 1}, "customer must be a non-empty string"),
        ({"customer": "x" * 201, "amount": 1}, "customer must be a non-empty string"),
        ({"customer": "X"}, "amount must be a number greater than 0"),
        ({"customer": "X", "amount": "10"}, "amount must be a number greater than 0"),
        ({"customer": "X", "amount": True}, "amount must be a number greater than 0"),
        ({"customer": "X", "amount": -5}, "amount must be a number greater than 0"),
        ({"customer": "X", "amount": 10**10}, "amount must be a number greater than 0"),
        ({"customer": "X", "amount": 1, "currency": "XYZ"}, "currency must be one of EUR, GBP"),
        ({"customer": "X", "amount": 1, "department": "Sales!"}, "department must be a short"),
    ],
)
def test_create_validates_the_body(client: FlaskClient, body: Any, error: str) -> None:
    if body is None:
        response = client.post(
            "/invoices",
            data="not json",
            headers={**as_user(ADMIN), "Content-Type": "application/json"},
        )
    else:
        response = client.post("/invoices", json=body, headers=as_user(ADMIN))
    assert response.status_code == 400
    payload = response.get_json()
    assert payload["success"] is False
    assert payload["error"].startswith(error)


# -- GET /invoices/<id> (ABAC) --------------------------------------------------------------


def test_same_department_may_read(client: FlaskClient) -> None:
    response = client.get("/invoices/1", headers=as_user(ACCOUNTANT))  # finance / finance
    assert response.status_code == 200
    assert response.get_json()["invoice"]["department"] == "finance"


def test_other_department_is_denied_with_the_reason(client: FlaskClient) -> None:
    response = client.get("/invoices/1", headers=as_user(VIEWER))  # sales user, finance invoice
    assert response.status_code == 403
    body = response.get_json()
    assert body["success"] is False
    assert "department mismatch" in body["error"]


def test_admin_reads_any_department(client: FlaskClient) -> None:
    assert client.get("/invoices/3", headers=as_user(ADMIN)).status_code == 200


def test_viewer_reads_own_department(client: FlaskClient) -> None:
    assert client.get("/invoices/3", headers=as_user(VIEWER)).status_code == 200


def test_user_without_department_is_denied(client: FlaskClient) -> None:
    assert client.get("/invoices/3", headers=as_user(NO_CLEARANCE)).status_code == 403


def test_missing_invoice(client: FlaskClient) -> None:
    response = client.get("/invoices/999", headers=as_user(ADMIN))
    assert response.status_code == 404
    assert response.get_json() == {"success": False, "error": "invoice 999 not found"}
    # Others learn nothing about which ids exist.
    assert client.get("/invoices/999", headers=as_user(VIEWER)).status_code == 403


@pytest.mark.parametrize("invoice_id", ["\u0663", "\uff13", "+3", "3 ", "0x3", "9" * 5000])
def test_invoice_ids_are_ascii_digits_only(client: FlaskClient, invoice_id: str) -> None:
    """Werkzeug's ``int`` takes any Unicode digit; billing_api's takes ASCII only."""
    response = client.get(f"/invoices/{invoice_id}", headers=as_user(ADMIN))
    assert response.status_code == 404
    assert response.get_json()["success"] is False
    assert client.get("/invoices/3", headers=as_user(ADMIN)).status_code == 200


# -- GET /reports (attribute) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "status"), [(ADMIN, 200), (VIEWER, 200), (ACCOUNTANT, 403), (NO_CLEARANCE, 403)]
)
def test_reports_need_clearance_3(client: FlaskClient, user: int, status: int) -> None:
    response = client.get("/reports", headers=as_user(user))
    assert response.status_code == status
    if status == 200:
        report = {r["department"]: r for r in response.get_json()["report"]}
        assert report["finance"] == {"department": "finance", "invoices": 2, "total": 2030.5}


def test_a_non_numeric_clearance_is_denied(
    fake_redis: fakeredis.FakeRedis, idp_mock: FakeIdP, key_prefix: str
) -> None:
    idp_mock.add(77, roles=["viewer"], attributes={"clearance": "5"})
    client = create_app(config(key_prefix), redis=fake_redis).test_client()
    assert client.get("/reports", headers=as_user(77)).status_code == 403


# -- /whoami and /stats ---------------------------------------------------------------------


def test_whoami_returns_the_attributes_and_the_worker(client: FlaskClient) -> None:
    response = client.get("/whoami", headers=as_user(VIEWER))
    assert response.status_code == 200
    body = response.get_json()
    assert body["pid"] == os.getpid()
    assert body["user"]["user_id"] == VIEWER
    assert body["user"]["service_name"] == "billing_api"
    assert body["user"]["roles"] == ["viewer"]
    assert body["user"]["attributes"] == {"department": "sales", "clearance": 3}


def test_stats_are_for_admins(client: FlaskClient) -> None:
    client.get("/invoices", headers=as_user(VIEWER))
    assert client.get("/stats", headers=as_user(VIEWER)).status_code == 403
    response = client.get("/stats", headers=as_user(ADMIN))
    assert response.status_code == 200
    stats = response.get_json()["stats"]
    assert stats["auto_refreshes"] == 2
    assert stats["allowed"] >= 1
    assert stats["denied"] == 1


# -- the cache path -------------------------------------------------------------------------


def test_auto_refresh_once_then_cached(client: FlaskClient, idp_mock: FakeIdP) -> None:
    for _ in range(3):
        assert client.get("/invoices", headers=as_user(ADMIN)).status_code == 200
    assert len(idp_mock.requests) == 1
    assert idp_mock.requests[0]["body"] == {"user_id": ADMIN, "service_name": "billing_api"}
    assert idp_mock.requests[0]["auth"] == "Bearer service-token-for-tests"
    # What the IdP wrote to Redis (and its TTL) is the IdP's to test: tests/idp/test_cache.py.


def test_idp_down_and_nothing_cached_is_503(
    fake_redis: fakeredis.FakeRedis, key_prefix: str
) -> None:
    with responses.RequestsMock() as mock:
        mock.add("POST", IDP + "/api/refresh-user-cache/", body=requests.ConnectionError("down"))
        client = create_app(config(key_prefix), redis=fake_redis).test_client()
        response = client.get("/invoices", headers=as_user(ADMIN))
    assert response.status_code == 503
    assert response.get_json() == {
        "success": False,
        "error": "attributes temporarily unavailable",
        "reason": "attributes_unavailable",
    }


# -- configuration --------------------------------------------------------------------------


def test_configuration_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis
) -> None:
    monkeypatch.setenv("IDENTITY_PROVIDER_URL", "http://idp.example:9000")
    monkeypatch.setenv("RBAC_ABAC_CACHE_TTL", "3600")
    monkeypatch.setenv("RBAC_ABAC_SERVICE_TOKEN", "from-env")
    monkeypatch.setenv("RBAC_ABAC_KEY_PREFIX", "envprefix")
    monkeypatch.setenv("RBAC_ABAC_JWT_SECRET", JWT_SECRET)
    monkeypatch.setenv("BILLING_API_RBAC_ABAC_LOCAL_CACHE_TTL", "5")
    app = create_app(redis=fake_redis)
    assert app.config["SERVICE_NAME"] == "billing_api"
    assert app.config["RBAC_ABAC_LOCAL_CACHE_TTL"] == 5
    with app.app_context():
        client = app.extensions["rbac_abac"].client
        assert client.ttl == 3600
        assert client.key(7) == "envprefix:attrs:billing_api:7"


def test_each_app_has_its_own_invoices(
    fake_redis: fakeredis.FakeRedis, idp_mock: FakeIdP, key_prefix: str
) -> None:
    first = create_app(config(key_prefix), redis=fake_redis).test_client()
    second = create_app(config(key_prefix), redis=fake_redis).test_client()
    body = {"customer": "Only here", "amount": 5}
    assert first.post("/invoices", json=body, headers=as_user(ADMIN)).status_code == 201
    assert first.get("/invoices", headers=as_user(ADMIN)).get_json()["count"] == 6
    assert second.get("/invoices", headers=as_user(ADMIN)).get_json()["count"] == 5


def test_every_response_names_the_worker(client: FlaskClient) -> None:
    for response in (client.get("/nope"), client.get("/invoices"), client.get("/healthz")):
        assert response.headers["X-Worker-Pid"] == str(os.getpid())


def test_every_route_has_a_rule_or_is_public(app: Flask) -> None:
    assert app.config["RBAC_ABAC_REQUIRE_AUTHORIZATION"] is True
    result = app.test_cli_runner().invoke(args=["rbac-abac", "routes"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert not [line for line in lines if "UNPROTECTED" in line or "MISPLACED" in line]
    assert any(line.split()[1:] == ["/healthz", "health.healthz", "public"] for line in lines)
    assert lines[-1].endswith("0 unprotected, 0 misplaced, 1 static")

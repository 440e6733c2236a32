"""The HTTP API matrix: every status code of issue 3, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from .conftest import ADMIN, MANIFEST, bearer

REFRESH = "/api/refresh-user-cache/"


# -- POST /api/refresh-user-cache/ ----------------------------------------------------------


def test_refresh_returns_roles_permissions_attributes(api, key_prefix):
    token = api.service()
    uid = api.user("alice", {"department": "finance", "clearance": 5})
    api.roles(uid, ["accountant", "viewer"])
    r = api.refresh(uid, token=token)
    assert r.status_code == 200
    body = r.json
    assert body["success"] is True
    assert body["user_id"] == uid
    assert body["service_name"] == "billing_api"
    assert body["ttl"] == 86400
    assert body["cached"] is True
    attrs = body["attributes"]
    assert attrs["roles"] == ["accountant", "viewer"]
    assert attrs["permissions"] == ["invoice:read", "invoice:write"]
    assert attrs["attributes"] == {"department": "finance", "clearance": 5}
    assert attrs["schema"] == 1
    assert body["version"] == attrs["version"] == 1


def test_refresh_with_admin_token(api):
    api.service()
    uid = api.user("alice")
    api.roles(uid, ["viewer"])
    r = api.refresh(uid)
    assert r.status_code == 200
    assert r.json["attributes"]["roles"] == ["viewer"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"user_id": "123", "service_name": "billing_api"}, "user_id must be an integer"),
        ({"user_id": True, "service_name": "billing_api"}, "user_id must be an integer"),
        ({"user_id": 1.5, "service_name": "billing_api"}, "user_id must be an integer"),
        ({"user_id": 2.0**53, "service_name": "billing_api"}, "user_id must be an integer"),
        ({"user_id": -1, "service_name": "billing_api"}, "user_id must be an integer"),
        ({"user_id": 0, "service_name": "billing_api"}, "user_id must be an integer"),
        ({"user_id": 2**63, "service_name": "billing_api"}, "user_id must be an integer"),
        ({"user_id": None, "service_name": "billing_api"}, "user_id must be an integer"),
        ({"user_id": 1, "service_name": "billing:api"}, "invalid service_name"),
        ({"user_id": 1, "service_name": "billing*"}, "invalid service_name"),
        ({"user_id": 1, "service_name": "b" * 65}, "invalid service_name"),
        ({"user_id": 1, "service_name": ""}, "invalid service_name"),
        ({"user_id": 1, "service_name": 7}, "invalid service_name"),
        ({"user_id": 1}, "missing field(s): service_name"),
        ({"service_name": "billing_api"}, "missing field(s): user_id"),
        ({"user_id": 1, "service_name": "billing_api", "x": 1}, "unknown field(s): x"),
        ([1, "billing_api"], "request body must be a JSON object"),
    ],
)
def test_refresh_rejects_bad_bodies(api, body, error):
    api.service()
    r = api.client.post(REFRESH, json=body, headers=ADMIN)
    assert r.status_code == 400
    assert r.json["success"] is False
    assert r.json["error"].startswith(error), r.json


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"user_id": NaN}', b"\xff\xfe"])
def test_refresh_rejects_non_json(api, raw):
    r = api.client.post(REFRESH, data=raw, headers=ADMIN, content_type="application/json")
    assert r.status_code == 400
    assert r.json["success"] is False


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong-token"),
        {"Authorization": "Basic YWxpY2U6cHc="},
        {"Authorization": "Bearer"},
    ],
)
def test_refresh_needs_a_valid_token(api, headers):
    api.service()
    uid = api.user("alice")
    r = api.client.post(
        REFRESH, json={"user_id": uid, "service_name": "billing_api"}, headers=headers
    )
    assert r.status_code == 401
    assert r.json == {"success": False, "error": "missing or invalid bearer token"}


def test_refresh_with_another_services_token_is_403(api):
    api.service()
    other = api.service("shipping_api", {"clerk": ["parcel:read"]})
    uid = api.user("alice")
    r = api.refresh(uid, "billing_api", token=other)
    assert r.status_code == 403
    assert r.json == {
        "success": False,
        "error": "this token is not valid for service 'billing_api'",
    }


def test_refresh_unregistered_service_is_404(api):
    uid = api.user("alice")
    r = api.refresh(uid, "nope_api")
    assert r.status_code == 404
    assert r.json == {
        "success": False,
        "error": "service 'nope_api' is not registered",
        "code": "service_not_registered",
    }


def test_refresh_unknown_user_is_404(api):
    token = api.service()
    for uid in (999, 2**40):
        r = api.refresh(uid, token=token)
        assert r.status_code == 404
        assert r.json == {
            "success": False,
            "error": f"user {uid} not found or inactive",
            "code": "user_not_found",
        }


def test_refresh_method_not_allowed_is_json_405(client):
    r = client.get(REFRESH, headers=ADMIN)
    assert r.status_code == 405
    assert r.json == {"success": False, "error": "method not allowed"}
    assert "POST" in r.headers["Allow"]


def test_oversized_body_is_json_413(client):
    big = b'{"user_id": 1, "service_name": "' + b"a" * (70 * 1024) + b'"}'
    r = client.post(REFRESH, data=big, headers=ADMIN, content_type="application/json")
    assert r.status_code == 413
    assert r.json == {"success": False, "error": "request body too large"}


# -- POST /api/services/ --------------------------------------------------------------------


def test_register_service_201_then_update_200(api):
    r = api.client.post(
        "/api/services/", json={"name": "billing_api", "roles": MANIFEST}, headers=ADMIN
    )
    assert r.status_code == 201
    assert r.json["success"] is True
    assert r.json["name"] == "billing_api"
    assert r.json["token"].startswith("svc_")
    uid = api.user("alice")
    api.roles(uid, ["viewer"])
    assert api.refresh(uid, token=r.json["token"]).status_code == 200

    r2 = api.client.post(
        "/api/services/",
        json={"name": "billing_api", "roles": {"viewer": ["invoice:read"]}},
        headers=ADMIN,
    )
    assert r2.status_code == 200
    assert "token" not in r2.json
    assert r2.json["roles"] == {"viewer": ["invoice:read"]}
    # The first token stays valid.
    assert api.refresh(uid, token=r.json["token"]).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"name": "bad:name", "roles": {}},
        {"name": "bad*", "roles": {}},
        {"name": "x" * 65, "roles": {}},
        {"name": "ok", "roles": []},
        {"name": "ok", "roles": {"admin": "invoice:read"}},
        {"name": "ok", "roles": {"admin": [1]}},
        {"name": "ok", "roles": {"has space": []}},
        {"name": "ok"},
    ],
)
def test_register_service_rejects_bad_bodies(client, body):
    r = client.post("/api/services/", json=body, headers=ADMIN)
    assert r.status_code == 400
    assert r.json["success"] is False


def test_register_service_needs_admin(api):
    token = api.service()
    body = {"name": "evil_api", "roles": {}}
    assert api.client.post("/api/services/", json=body).status_code == 401
    r = api.client.post("/api/services/", json=body, headers=bearer(token))
    assert r.status_code == 403
    assert r.json["error"] == "this endpoint needs the admin token"


# -- POST /api/users/ -----------------------------------------------------------------------


def test_create_user_201_and_409_on_duplicate(client):
    body = {"username": "alice", "password": "pw", "attributes": {"clearance": 5}}
    r = client.post("/api/users/", json=body, headers=ADMIN)
    assert r.status_code == 201
    assert r.json["success"] is True
    assert isinstance(r.json["id"], int)
    assert r.json["username"] == "alice"
    assert r.json["attributes"] == {"clearance": 5}
    r = client.post("/api/users/", json=body, headers=ADMIN)
    assert r.status_code == 409
    assert r.json == {"success": False, "error": "user 'alice' already exists"}


@pytest.mark.parametrize(
    "body",
    [
        {"username": "", "password": "pw"},
        {"username": "a b", "password": "pw"},
        {"username": "a" * 65, "password": "pw"},
        {"username": 5, "password": "pw"},
        {"username": "alice"},
        {"username": "alice", "password": ""},
        {"username": "alice", "password": "pw", "attributes": []},
        {"username": "alice", "password": "pw", "attributes": {"x": "y" * 40000}},
        {"username": "alice", "password": "pw", "extra": 1},
    ],
)
def test_create_user_rejects_bad_bodies(client, body):
    r = client.post("/api/users/", json=body, headers=ADMIN)
    assert r.status_code == 400
    assert r.json["success"] is False


def test_create_user_rejects_deep_attributes(client):
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["x"] = {}
        node = node["x"]
    body = {"username": "alice", "password": "pw", "attributes": deep}
    r = client.post("/api/users/", json=body, headers=ADMIN)
    assert r.status_code == 400
    assert "nest" in r.json["error"]


def test_create_user_needs_admin(api):
    token = api.service()
    body = {"username": "alice", "password": "pw"}
    assert api.client.post("/api/users/", json=body).status_code == 401
    assert api.client.post("/api/users/", json=body, headers=bearer("nope")).status_code == 401
    assert api.client.post("/api/users/", json=body, headers=bearer(token)).status_code == 403


# -- PUT /api/users/<id>/roles/<service> ----------------------------------------------------


def test_set_roles_replaces_roles(api):
    api.service()
    uid = api.user("bob")
    body = api.roles(uid, ["admin"])
    assert body["roles"] == ["admin"]
    assert body["permissions"] == ["invoice:read", "invoice:write", "report:read"]
    body = api.roles(uid, ["viewer"])
    assert body["roles"] == ["viewer"]
    assert body["version"] == 2
    assert api.refresh(uid).json["attributes"]["roles"] == ["viewer"]


def test_set_roles_unknown_roles_is_400_naming_them(api):
    api.service()
    uid = api.user("bob")
    r = api.client.put(
        f"/api/users/{uid}/roles/billing_api",
        json={"roles": ["viewer", "root", "god"]},
        headers=ADMIN,
    )
    assert r.status_code == 400
    assert r.json["error"] == "unknown role(s) for service 'billing_api': god, root"


@pytest.mark.parametrize(
    "body", [{"roles": "admin"}, {"roles": [1]}, {}, {"roles": ["viewer"], "x": 1}, []]
)
def test_set_roles_rejects_bad_bodies(api, body):
    api.service()
    uid = api.user("bob")
    r = api.client.put(f"/api/users/{uid}/roles/billing_api", json=body, headers=ADMIN)
    assert r.status_code == 400


def test_set_roles_404s(api):
    api.service()
    uid = api.user("bob")
    r = api.client.put("/api/users/999/roles/billing_api", json={"roles": []}, headers=ADMIN)
    assert r.status_code == 404
    assert r.json["error"] == "user 999 not found or inactive"
    r = api.client.put(f"/api/users/{uid}/roles/nope_api", json={"roles": []}, headers=ADMIN)
    assert r.status_code == 404
    assert r.json["error"] == "service 'nope_api' is not registered"
    r = api.client.put(f"/api/users/{2**40}/roles/billing_api", json={"roles": []}, headers=ADMIN)
    assert r.status_code == 404
    assert api.client.delete(f"/api/users/{uid}", headers=ADMIN).status_code == 200
    r = api.client.put(f"/api/users/{uid}/roles/billing_api", json={"roles": []}, headers=ADMIN)
    assert r.status_code == 404


@pytest.mark.parametrize("name", ["bad:name", "bad*", "x" * 65])
def test_set_roles_bad_service_name_is_400(api, name):
    uid = api.user("bob")
    r = api.client.put(f"/api/users/{uid}/roles/{name}", json={"roles": []}, headers=ADMIN)
    assert r.status_code == 400
    assert "invalid service_name" in r.json["error"]


def test_set_roles_needs_admin(api):
    token = api.service()
    uid = api.user("bob")
    url = f"/api/users/{uid}/roles/billing_api"
    assert api.client.put(url, json={"roles": ["admin"]}).status_code == 401
    assert api.client.put(url, json={"roles": ["admin"]}, headers=bearer(token)).status_code == 403
    assert api.refresh(uid).json["code"] == "user_not_found"  # still no role there


# -- PATCH /api/users/<id>/attributes -------------------------------------------------------


def test_patch_attributes_merges_and_removes(api):
    api.service()
    uid = api.user("carol", {"department": "sales", "clearance": 3})
    api.roles(uid, ["viewer"])
    r = api.client.patch(
        f"/api/users/{uid}/attributes", json={"clearance": 4, "department": None}, headers=ADMIN
    )
    assert r.status_code == 200
    assert r.json["attributes"] == {"clearance": 4}
    assert r.json["versions"] == {"billing_api": 2}
    assert api.refresh(uid).json["attributes"]["attributes"] == {"clearance": 4}


@pytest.mark.parametrize("body", [{}, [], {"x": "y" * 40000}])
def test_patch_attributes_rejects_bad_bodies(api, body):
    uid = api.user("carol")
    r = api.client.patch(f"/api/users/{uid}/attributes", json=body, headers=ADMIN)
    assert r.status_code == 400


def test_patch_attributes_404_and_auth(api):
    token = api.service()
    assert (
        api.client.patch("/api/users/999/attributes", json={"a": 1}, headers=ADMIN).status_code
        == 404
    )
    uid = api.user("carol")
    url = f"/api/users/{uid}/attributes"
    assert api.client.patch(url, json={"a": 1}).status_code == 401
    assert api.client.patch(url, json={"a": 1}, headers=bearer(token)).status_code == 403


# -- DELETE /api/users/<id> -----------------------------------------------------------------


def test_delete_deactivates_and_refresh_then_denies(api):
    token = api.service()
    uid = api.user("alice")
    api.roles(uid, ["admin"])
    assert api.refresh(uid, token=token).status_code == 200
    r = api.client.delete(f"/api/users/{uid}", headers=ADMIN)
    assert r.status_code == 200
    assert r.json["active"] is False
    r = api.refresh(uid, token=token)
    assert r.status_code == 404
    assert r.json["error"] == f"user {uid} not found or inactive"
    assert api.client.delete(f"/api/users/{uid}", headers=ADMIN).status_code == 404
    r = api.client.post("/api/token", json={"username": "alice", "password": "alice-pass"})
    assert r.status_code == 401


def test_delete_404_and_auth(api):
    token = api.service()
    uid = api.user("alice")
    api.roles(uid, ["viewer"])
    assert api.client.delete("/api/users/999", headers=ADMIN).status_code == 404
    assert api.client.delete(f"/api/users/{uid}").status_code == 401
    assert api.client.delete(f"/api/users/{uid}", headers=bearer(token)).status_code == 403
    assert api.refresh(uid).status_code == 200


# -- POST /api/token ------------------------------------------------------------------------


def test_token_issued_for_valid_credentials(api):
    api.user("alice")
    r = api.client.post("/api/token", json={"username": "alice", "password": "alice-pass"})
    assert r.status_code == 200
    assert r.json["token_type"] == "Bearer"
    assert r.json["expires_in"] == 900
    assert r.json["access_token"].count(".") == 2


@pytest.mark.parametrize(
    "body",
    [
        {"username": "alice", "password": "wrong"},
        {"username": "nobody", "password": "alice-pass"},
        {"username": "a" * 500, "password": "x"},
    ],
)
def test_token_wrong_credentials_is_401(api, body):
    api.user("alice")
    r = api.client.post("/api/token", json=body)
    assert r.status_code == 401
    assert r.json == {"success": False, "error": "invalid username or password"}


@pytest.mark.parametrize("body", [{"username": "alice"}, {"username": 1, "password": "x"}, []])
def test_token_bad_body_is_400(client, body):
    assert client.post("/api/token", json=body).status_code == 400


# -- GET /healthz, unknown routes, 500 ------------------------------------------------------


def test_healthz_ok(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json["database"] == {"ok": True}
    assert r.json["redis"] == {"ok": True, "repaired_entries": 0}
    assert r.json["outbox"] == {"ok": True, "backlog": 0, "oldest_age_seconds": None}


def test_unknown_route_is_json_404(client):
    r = client.get("/nope")
    assert r.status_code == 404
    assert r.json == {"success": False, "error": "not found"}


def test_unexpected_error_is_json_500_without_traceback(app, caplog):
    def boom():
        raise RuntimeError("secret detail")

    app.add_url_rule("/boom", "boom", boom)
    r = app.test_client().get("/boom")
    assert r.status_code == 500
    assert r.json == {"success": False, "error": "internal server error"}
    assert b"secret detail" not in r.data

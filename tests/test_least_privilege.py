"""Least privilege seen from a service: who it may know, and what a bad identity costs.

The service runs the extension on the real Redis; its IdP calls go through ``responses`` to the
real ``idp_app`` (in process, SQLite), so every IdP call is counted and answered as in production.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
import responses
from flask import Flask, jsonify

from flask_rbac_abac import RBACABAC, current_attributes, requires_permission
from idp_app import create_app, db, schema

from .conftest import IDP, REDIS_URL, make_token

pytestmark = pytest.mark.redis  # the IdP and the service share the real Redis

ADMIN = {"Authorization": "Bearer least-privilege-admin-token-0123"}
SECRET = "least-privilege-secret-" + "q" * 32
MANIFEST = {"viewer": ["invoice:read"]}


@dataclass
class World:
    idp: Any
    token: str
    users: dict[str, int]
    calls: list[dict[str, Any]] = field(default_factory=list)

    def user_token(self, username: str) -> dict[str, str]:
        body = {"username": username, "password": username + "-pass"}
        r = self.idp.test_client().post("/api/token", json=body)
        assert r.status_code == 200, r.json
        return {"Authorization": "Bearer " + r.json["access_token"]}


@pytest.fixture
def world(tmp_path, key_prefix, real_redis) -> Iterator[World]:
    """billing_api at the real IdP: alice is a viewer, dave holds no role there."""
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'idp.sqlite3'}",
            "RBAC_ABAC_REDIS_URL": REDIS_URL,
            "RBAC_ABAC_KEY_PREFIX": key_prefix,
            "IDP_ADMIN_TOKEN": ADMIN["Authorization"].split()[1],
            "RBAC_ABAC_JWT_SECRET": SECRET,
            "IDP_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        }
    )
    with app.app_context():
        schema.upgrade()
    admin = app.test_client()
    r = admin.post("/api/services/", json={"name": "billing_api", "roles": MANIFEST}, headers=ADMIN)
    users = {}
    for name in ("alice", "dave"):
        created = admin.post(
            "/api/users/",
            json={"username": name, "password": name + "-pass", "attributes": {"team": name}},
            headers=ADMIN,
        )
        users[name] = created.json["id"]
    admin.put(
        f"/api/users/{users['alice']}/roles/billing_api", json={"roles": ["viewer"]}, headers=ADMIN
    )
    out = World(app, r.json["token"], users)

    def forward(request: Any) -> tuple[int, dict[str, str], bytes]:
        out.calls.append(json.loads(request.body))
        answer = app.test_client().post(
            "/api/refresh-user-cache/",
            data=request.body,
            headers={
                "Authorization": request.headers["Authorization"],
                "Content-Type": "application/json",
            },
        )
        return answer.status_code, {}, answer.get_data()

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback("POST", IDP + "/api/refresh-user-cache/", callback=forward)
        yield out
    with app.app_context():
        db.engine.dispose()


def service(world: World, key_prefix: str, rbac: RBACABAC | None = None) -> Flask:
    app = Flask("billing_api")
    app.config.update(
        SERVICE_NAME="billing_api",
        IDENTITY_PROVIDER_URL=IDP,
        RBAC_ABAC_SERVICE_TOKEN=world.token,
        RBAC_ABAC_REDIS_URL=REDIS_URL,
        RBAC_ABAC_JWT_SECRET=SECRET,
        RBAC_ABAC_KEY_PREFIX=key_prefix,
        RBAC_ABAC_INVALIDATION=False,
    )
    rbac = rbac or RBACABAC()
    rbac.init_app(app)

    @app.get("/invoices")
    @requires_permission("invoice:read")
    def invoices() -> Any:
        return jsonify(user=current_attributes.user_id, team=current_attributes.get("team"))

    return app


# -- a user without a role here is unknown here ---------------------------------------------


def test_a_user_without_a_role_is_unknown_and_remembered(world, key_prefix) -> None:
    client = service(world, key_prefix).test_client()
    alice = client.get("/invoices", headers=world.user_token("alice"))
    assert alice.status_code == 200
    assert alice.json == {"user": world.users["alice"], "team": "alice"}
    dave = world.user_token("dave")
    for _ in range(3):
        r = client.get("/invoices", headers=dave)
        assert r.status_code == 403
        assert r.json == {
            "success": False,
            "error": f"user {world.users['dave']} has no attributes in service billing_api",
            "reason": "unknown_user",
        }
    # alice came from Redis (her role change wrote it); dave was asked for once, then remembered.
    assert [c["user_id"] for c in world.calls] == [world.users["dave"]]


# -- a signed token whose sub is not a user id ----------------------------------------------


@pytest.mark.parametrize(
    "sub",
    ["alice", "-1", "1.0", "٣", "", "0123", " 1", "1 ", "+1", "0", "9223372036854775808",
     "1" * 40, True, 1.5, 1, 2**63, 2**200, None, ["1"], {"id": 1}],
)  # fmt: skip
def test_a_sub_that_is_not_a_user_id_is_401_without_an_idp_call(world, key_prefix, sub) -> None:
    client = service(world, key_prefix).test_client()
    headers = {"Authorization": "Bearer " + make_token(1, secret=SECRET, sub=sub)}
    for _ in range(3):
        r = client.get("/invoices", headers=headers)
        if sub is None:  # no subject at all: the token itself is invalid
            assert r.status_code == 401
            assert r.json["reason"] == "no_identity"
            continue
        assert r.status_code == 401
        assert r.json == {
            "success": False,
            "error": "the identity is not a valid user id",
            "reason": "invalid_identity",
        }
        assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert world.calls == []


def test_the_largest_user_id_is_a_valid_subject(world, key_prefix) -> None:
    client = service(world, key_prefix).test_client()
    headers = {"Authorization": "Bearer " + make_token(2**63 - 1, secret=SECRET)}
    for _ in range(3):
        r = client.get("/invoices", headers=headers)
        assert r.status_code == 403
        assert r.json["reason"] == "unknown_user"
    assert world.calls == [{"user_id": 2**63 - 1, "service_name": "billing_api"}]


def test_the_idps_own_tokens_name_valid_subjects(world) -> None:
    claims = jwt.decode(
        world.user_token("alice")["Authorization"].split()[1],
        options={"verify_signature": False},
    )
    assert claims["sub"] == str(world.users["alice"])


# -- a custom identity loader's string ids --------------------------------------------------


def test_a_string_id_from_a_custom_loader_is_remembered_as_unknown(world, key_prefix) -> None:
    rbac = RBACABAC()

    @rbac.identity_loader
    def from_header() -> str | None:
        from flask import request

        return request.headers.get("X-User")

    client = service(world, key_prefix, rbac).test_client()
    for _ in range(3):
        r = client.get("/invoices", headers={"X-User": "alice"})
        assert r.status_code == 403
        assert r.json["reason"] == "unknown_user"
    assert world.calls == [{"user_id": "alice", "service_name": "billing_api"}]
    # A numeric string names the integer user, as documented.
    r = client.get("/invoices", headers={"X-User": str(world.users["alice"])})
    assert r.status_code == 200
    # A value that cannot be a user id at all is refused before any lookup.
    bad = client.get("/invoices", headers={"X-User": "a:b"})
    assert bad.status_code == 401
    assert bad.json["reason"] == "invalid_identity"
    assert len(world.calls) == 1  # user 1 came from Redis, "a:b" went nowhere

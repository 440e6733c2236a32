"""The library against the real IdP over HTTP, with the real Redis: issue 3's "done when".

The IdP runs in a thread on a loopback port (a real HTTP server); the service is a Flask app
using the extension. A role change at the IdP must be visible to the service at once, with
nothing restarted and no TTL waited for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests
from flask import Flask, jsonify
from werkzeug.serving import make_server

from flask_rbac_abac import RBACABAC, current_attributes, requires_permission, requires_role
from idp_app import create_app, db, schema

from .conftest import REDIS_URL
from .servers import wait_for

ADMIN_TOKEN = "integration-admin-token-0123456789"
SECRET = "integration-secret-" + "z" * 32
MANIFEST = {"admin": ["invoice:read", "invoice:write"], "viewer": ["invoice:read"]}


@pytest.fixture
def idp_url(tmp_path, key_prefix, real_redis) -> Iterator[str]:
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'idp.sqlite3'}",
            "RBAC_ABAC_REDIS_URL": REDIS_URL,
            "RBAC_ABAC_KEY_PREFIX": key_prefix,
            "IDP_ADMIN_TOKEN": ADMIN_TOKEN,
            "RBAC_ABAC_JWT_SECRET": SECRET,
            "IDP_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        }
    )
    with app.app_context():
        schema.upgrade()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)
    with app.app_context():
        db.engine.dispose()


def admin(idp_url: str, method: str, path: str, body: dict) -> requests.Response:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    return requests.request(method, idp_url + path, json=body, headers=headers, timeout=5)


@pytest.fixture
def world(idp_url, key_prefix):
    created = admin(idp_url, "POST", "/api/services/", {"name": "billing_api", "roles": MANIFEST})
    assert created.status_code == 201, created.text
    user = admin(
        idp_url,
        "POST",
        "/api/users/",
        {"username": "alice", "password": "alice-pass", "attributes": {"department": "finance"}},
    )
    assert user.status_code == 201, user.text
    user_id = user.json()["id"]
    assigned = admin(
        idp_url, "PUT", f"/api/users/{user_id}/roles/billing_api", {"roles": ["admin"]}
    )
    assert assigned.status_code == 200, assigned.text

    service = Flask("billing_api")
    service.config.update(
        SERVICE_NAME="billing_api",
        IDENTITY_PROVIDER_URL=idp_url,
        RBAC_ABAC_REDIS_URL=REDIS_URL,
        RBAC_ABAC_KEY_PREFIX=key_prefix,
        RBAC_ABAC_SERVICE_TOKEN=created.json()["token"],
        RBAC_ABAC_JWT_SECRET=SECRET,
    )
    rbac = RBACABAC(service)

    @service.get("/invoices")
    @requires_permission("invoice:read")
    def invoices():
        return jsonify(user=current_attributes.user_id, roles=list(current_attributes.roles))

    @service.post("/invoices")
    @requires_role("admin")
    def create():
        return jsonify(created=True), 201

    login = requests.post(
        idp_url + "/api/token", json={"username": "alice", "password": "alice-pass"}, timeout=5
    )
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    yield service, rbac, user_id, headers
    rbac.close(service)


def test_grant_then_revoke_without_restart(world, idp_url, real_redis) -> None:
    service, rbac, user_id, headers = world
    client = service.test_client()
    with service.app_context():
        rbac.client.invalidate(user_id)  # start cold: the first request goes to the IdP
    first = client.get("/invoices", headers=headers)
    assert first.status_code == 200 and first.json == {"user": user_id, "roles": ["admin"]}
    assert client.post("/invoices", headers=headers).status_code == 201
    with service.app_context():
        assert rbac.client.subscriber.wait_until_subscribed(2.0)
        key = rbac.client.key(user_id)
        assert 86390 <= real_redis.ttl(key) <= 86400
        assert rbac.stats()["auto_refreshes"] == 1

    changed = admin(
        idp_url, "PUT", f"/api/users/{user_id}/roles/billing_api", {"roles": ["viewer"]}
    )
    assert changed.status_code == 200
    started = time.monotonic()
    assert wait_for(lambda: client.post("/invoices", headers=headers).status_code == 403, 1.0)
    assert time.monotonic() - started < 1.0
    assert client.get("/invoices", headers=headers).json["roles"] == ["viewer"]

    gone = admin(idp_url, "DELETE", f"/api/users/{user_id}", {})
    assert gone.status_code == 200
    assert wait_for(lambda: client.get("/invoices", headers=headers).status_code == 403, 1.0)
    assert client.get("/invoices", headers=headers).json["reason"] == "unknown_user"


def test_expired_entry_is_refreshed_through_the_idp(world, real_redis) -> None:
    service, rbac, user_id, headers = world
    client = service.test_client()
    assert client.get("/invoices", headers=headers).status_code == 200
    with service.app_context():
        real_redis.delete(rbac.client.key(user_id))  # the 24 h TTL ran out
        rbac.client.local.clear()
        assert client.get("/invoices", headers=headers).status_code == 200
        assert real_redis.exists(rbac.client.key(user_id)) == 1
        assert rbac.stats()["auto_refreshes"] >= 1

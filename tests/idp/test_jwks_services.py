"""Services verify the IdP's tokens through its JWKS, served on a loopback port, holding no secret.

The IdP is the real app (SQLite and PostgreSQL) behind a real WSGI server; services are real
Flask apps with the extension, fetching attributes from that IdP through the real Redis.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask

from flask_rbac_abac import RBACABAC, requires_permission
from idp_app import db
from idp_app.models import SigningKey
from tests.conftest import REDIS_URL
from tests.wsgi_server import Served

from .conftest import Api

JWKS_PATH = "/.well-known/jwks.json"


def own_keys_idp(make_app: Any, database_url: str, **overrides: Any) -> Any:
    app = make_app(
        database_url,
        RBAC_ABAC_JWT_SECRET=None,
        IDP_TOKEN_RATE_LIMIT_PER_USER="1000/minute",
        **overrides,
    )
    assert app.test_cli_runner().invoke(args=["init-db"]).exit_code == 0
    return app


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[Served] = []

    def start(app: Any) -> Served:
        servers.append(Served(app))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def service(idp_url: str, name: str, token: str, key_prefix: str, **extra: Any) -> Flask:
    """A service named ``name`` that trusts the IdP's JWKS and nothing else."""
    app = Flask(name)
    app.config.update(
        SERVICE_NAME=name,
        IDENTITY_PROVIDER_URL=idp_url,
        RBAC_ABAC_SERVICE_TOKEN=token,
        RBAC_ABAC_REDIS_URL=REDIS_URL,
        RBAC_ABAC_KEY_PREFIX=key_prefix,
        RBAC_ABAC_INVALIDATION=False,
        RBAC_ABAC_JWT_SECRET=None,
        RBAC_ABAC_JWKS_URL=idp_url + JWKS_PATH,
        RBAC_ABAC_JWT_AUDIENCE=name,
        RBAC_ABAC_LOCAL_CACHE_TTL=1,
        **extra,
    )
    RBACABAC(app)

    @app.get("/invoices")
    @requires_permission("invoice:read")
    def invoices() -> Any:
        return {"ok": True}

    return app


def get(app: Flask, token: str) -> Any:
    return app.test_client().get("/invoices", headers={"Authorization": f"Bearer {token}"})


def login(idp: Any, audience: str | None = None) -> str:
    body = {"username": "alice", "password": "alice-pass"}
    if audience:
        body["audience"] = audience
    r = idp.test_client().post("/api/token", json=body)
    assert r.status_code == 200, r.json
    return str(r.json["access_token"])


class Stack:
    """An IdP served on a loopback port, billing_api and reports_api, alice a viewer in both."""

    def __init__(self, idp: Any, served: Served, key_prefix: str) -> None:
        self.idp, self.served, self.key_prefix = idp, served, key_prefix
        api = Api(idp.test_client())
        self.tokens = {name: api.service(name) for name in ("billing_api", "reports_api")}
        self.uid = api.user("alice")
        for name in self.tokens:
            api.roles(self.uid, ["viewer"], name)

    def service(self, name: str, **extra: Any) -> Flask:
        return service(self.served.url, name, self.tokens[name], self.key_prefix, **extra)


@pytest.fixture
def stack(make_app, database_url, real_redis, key_prefix, serve) -> Stack:
    idp = own_keys_idp(make_app, database_url, IDP_TOKEN_LIFETIME=6, IDP_SIGNING_KEY_LEEWAY=0)
    return Stack(idp, serve(idp), key_prefix)


def test_a_service_verifies_tokens_through_the_jwks(stack):
    billing = stack.service("billing_api")
    assert billing.config["RBAC_ABAC_JWT_SECRET"] is None  # no secret: the JWKS only
    r = get(billing, login(stack.idp, "billing_api"))
    assert r.status_code == 200, r.json
    assert stack.served.hits[JWKS_PATH] == 1
    # Another token signed by the same key: the cached key set verifies it, no fetch.
    assert get(billing, login(stack.idp, "billing_api")).status_code == 200
    assert stack.served.hits[JWKS_PATH] == 1


def test_a_token_for_one_service_is_refused_by_another(stack):
    billing, reports = stack.service("billing_api"), stack.service("reports_api")
    for_billing, for_reports = login(stack.idp, "billing_api"), login(stack.idp, "reports_api")
    assert get(billing, for_billing).status_code == 200
    assert get(reports, for_reports).status_code == 200
    for app, token in ((reports, for_billing), (billing, for_reports)):
        r = get(app, token)
        assert r.status_code == 401
        assert r.json["reason"] == "no_identity"
    # The default audience is neither service's name.
    assert get(billing, login(stack.idp)).status_code == 401


def test_rotation_with_nothing_restarted(stack):
    billing = stack.service("billing_api", RBAC_ABAC_JWKS_LIFESPAN=1)
    seen_before = login(stack.idp, "billing_api")
    unseen_before = login(stack.idp, "billing_api")
    with stack.idp.app_context():
        old = db.session.query(SigningKey).one()
        old_kid, old_pem = old.kid, old.private_key_pem
    assert get(billing, seen_before).status_code == 200
    fetches = stack.served.hits[JWKS_PATH]

    result = stack.idp.test_cli_runner().invoke(args=["rotate-signing-key"])
    assert result.exit_code == 0, result.output
    new = login(stack.idp, "billing_api")
    new_kid = jwt.get_unverified_header(new)["kid"]
    assert new_kid != old_kid
    # The running service learns the new key by itself (one fetch for the unknown kid) ...
    assert get(billing, new).status_code == 200
    assert stack.served.hits[JWKS_PATH] == fetches + 1
    # ... and still verifies, through the JWKS, a token the old key signed and it never saw.
    assert get(billing, unseen_before).status_code == 200
    assert get(billing, seen_before).status_code == 200

    time.sleep(6.5)  # lifetime 6 + leeway 0: the old tokens expired, the old key is unpublished
    kids = [k["kid"] for k in stack.idp.test_client().get(JWKS_PATH).json["keys"]]
    assert kids == [new_kid]
    for token in (seen_before, unseen_before):
        assert get(billing, token).status_code == 401
    # A token the old key signs now, with a fresh expiry, names a kid no longer published.
    forged = jwt.encode(
        {
            "sub": str(stack.uid),
            "aud": "billing_api",
            "iss": "rbac-abac-idp",
            "exp": time.time() + 60,
        },
        old_pem,
        algorithm="RS256",
        headers={"kid": old_kid},
    )
    r = get(billing, forged)
    assert r.status_code == 401
    assert r.json["reason"] == "no_identity"
    assert get(billing, login(stack.idp, "billing_api")).status_code == 200


def hs256_by_hand(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """An HS256 JWT made without PyJWT, which refuses a PEM public key as an HMAC secret."""
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = b".".join(
        jwt.utils.base64url_encode(json.dumps(part).encode()) for part in (header, claims)
    )
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


def test_an_hmac_token_keyed_with_the_public_key_is_refused(stack):
    billing = stack.service("billing_api")
    (jwk,) = stack.idp.test_client().get(JWKS_PATH).json["keys"]
    public_pem = jwt.PyJWK(jwk).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"sub": str(stack.uid), "aud": "billing_api", "iss": "rbac-abac-idp"}
    forged = hs256_by_hand({**claims, "exp": int(time.time()) + 60}, public_pem, jwk["kid"])
    r = get(billing, forged)
    assert r.status_code == 401
    assert r.json["reason"] == "no_identity"
    assert get(billing, login(stack.idp, "billing_api")).status_code == 200


def test_the_idp_being_unreachable_is_503_identity_unavailable(stack, free_port):
    app = service(
        f"http://127.0.0.1:{free_port}",
        "billing_api",
        stack.tokens["billing_api"],
        "p" + uuid.uuid4().hex[:8],
    )
    r = get(app, login(stack.idp, "billing_api"))
    assert r.status_code == 503
    assert r.json == {
        "success": False,
        "error": "the identity cannot be verified now",
        "reason": "identity_unavailable",
    }

"""Access tokens: PyJWT verifies them with the same key, audience and issuer."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .conftest import ADMIN, JWT_SECRET, Api


def login(client, username="alice", password="alice-pass"):
    r = client.post("/api/token", json={"username": username, "password": password})
    assert r.status_code == 200, r.json
    return r.json


def test_hs256_token_verifies(api):
    uid = api.user("alice")
    before = int(time.time())
    body = login(api.client)
    claims = jwt.decode(
        body["access_token"],
        JWT_SECRET,
        algorithms=["HS256"],
        audience="rbac-abac",
        issuer="rbac-abac-idp",
        options={"require": ["exp", "iat", "sub", "aud", "iss"]},
    )
    assert claims["sub"] == str(uid)
    assert claims["exp"] - claims["iat"] == 900
    assert before <= claims["iat"] <= int(time.time())
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(body["access_token"], "x" * 40, algorithms=["HS256"], audience="rbac-abac")


def test_audience_issuer_and_lifetime_are_configurable(make_app, sqlite_url):
    app = make_app(
        sqlite_url,
        RBAC_ABAC_JWT_AUDIENCE="aud-x",
        RBAC_ABAC_JWT_ISSUER="iss-x",
        IDP_TOKEN_LIFETIME=60,
    )
    Api(app.test_client()).user("alice")
    body = login(app.test_client())
    assert body["expires_in"] == 60
    claims = jwt.decode(
        body["access_token"], JWT_SECRET, algorithms=["HS256"], audience="aud-x", issuer="iss-x"
    )
    assert claims["exp"] - claims["iat"] == 60
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"], audience="rbac-abac")


def test_rs256_token_verifies_with_the_public_key(make_app, sqlite_url):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    app = make_app(sqlite_url, RBAC_ABAC_JWT_SECRET=None, RBAC_ABAC_JWT_PRIVATE_KEY=private_pem)
    uid = Api(app.test_client()).user("alice")
    token = login(app.test_client())["access_token"]
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(
        token, public_pem, algorithms=["RS256"], audience="rbac-abac", issuer="rbac-abac-idp"
    )
    assert claims["sub"] == str(uid)


def test_no_signing_key_is_503(make_app, sqlite_url):
    app = make_app(sqlite_url, RBAC_ABAC_JWT_SECRET=None)
    client = app.test_client()
    r = client.post(
        "/api/users/", json={"username": "alice", "password": "alice-pass"}, headers=ADMIN
    )
    assert r.status_code == 201
    r = client.post("/api/token", json={"username": "alice", "password": "alice-pass"})
    assert r.status_code == 503
    assert "RBAC_ABAC_JWT_SECRET" in r.json["error"]


def test_token_round_trips_through_the_librarys_identity_loader(api):
    from flask_rbac_abac.identity import JWTVerifier

    uid = api.user("alice")
    token = login(api.client)["access_token"]
    verifier = JWTVerifier(JWT_SECRET, "HS256", audience="rbac-abac", issuer="rbac-abac-idp")
    assert verifier.user_id(f"Bearer {token}") == uid
    wrong = JWTVerifier(JWT_SECRET, "HS256", audience="other", issuer="rbac-abac-idp")
    assert wrong.user_id(f"Bearer {token}") is None

"""Signing keys, the JWKS and discovery documents, rotation and per-audience tokens at the IdP."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from flask_rbac_abac import ConfigurationError
from idp_app import create_app, db
from idp_app.models import SigningKey
from idp_app.signing_keys import thumbprint

from .conftest import ADMIN_TOKEN, JWT_SECRET, Api

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
#: The IdP signing with keys of its own (no secret, no configured key); logins not limited.
OWN_KEYS = {"RBAC_ABAC_JWT_SECRET": None, "IDP_TOKEN_RATE_LIMIT_PER_USER": "1000/minute"}


def cli(app, *args):
    result = app.test_cli_runner().invoke(args=list(args))
    return result


def login(client, username="alice", **extra):
    body = {"username": username, "password": username + "-pass", **extra}
    return client.post("/api/token", json=body)


def own_keys_app(make_app, database_url, **overrides):
    app = make_app(database_url, **{**OWN_KEYS, **overrides})
    result = cli(app, "init-db")
    assert result.exit_code == 0, result.output
    return app


def pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_init_db_generates_an_rs256_key_the_jwks_publishes_without_private_parts(
    make_app, database_url, real_redis
):
    app = own_keys_app(make_app, database_url)
    client = app.test_client()
    r = client.get("/.well-known/jwks.json")
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "public, max-age=60"
    (key,) = r.json["keys"]
    assert set(key) == {"kty", "n", "e", "kid", "alg", "use"}
    assert not PRIVATE_MEMBERS & set(key)
    assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
    assert key["kid"] == thumbprint(key)
    uid = Api(client).user("alice")
    token = login(client).json["access_token"]
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": key["kid"], "typ": "JWT"}
    claims = jwt.decode(
        token,
        jwt.PyJWK(key).key,
        algorithms=["RS256"],
        audience="rbac-abac",
        issuer="rbac-abac-idp",
    )
    assert claims["sub"] == str(uid)
    # A second init-db keeps the key.
    assert "Generated" not in cli(app, "init-db").output
    assert client.get("/.well-known/jwks.json").json["keys"] == [key]


def test_es256_keys_when_configured(make_app, database_url, real_redis):
    app = own_keys_app(make_app, database_url, IDP_SIGNING_ALGORITHM="ES256")
    (key,) = app.test_client().get("/.well-known/jwks.json").json["keys"]
    assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256")
    Api(app.test_client()).user("alice")
    token = login(app.test_client()).json["access_token"]
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    jwt.decode(token, jwt.PyJWK(key).key, algorithms=["ES256"], audience="rbac-abac")


def test_openid_configuration(make_app, database_url, real_redis):
    app = own_keys_app(make_app, database_url)
    r = app.test_client().get("/.well-known/openid-configuration")
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "public, max-age=60"
    assert r.json == {
        "issuer": "rbac-abac-idp",
        "jwks_uri": "http://localhost/.well-known/jwks.json",
        "token_endpoint": "http://localhost/api/token",
        "grant_types_supported": ["password"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "token_endpoint_auth_methods_supported": ["none"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["sub", "aud", "iss", "iat", "exp"],
    }


def test_hs256_single_service_mode_publishes_no_keys(app, api):
    client = app.test_client()
    assert client.get("/.well-known/jwks.json").json == {"keys": []}
    document = client.get("/.well-known/openid-configuration").json
    assert document["id_token_signing_alg_values_supported"] == ["HS256"]
    api.user("alice")
    token = login(client).json["access_token"]
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    assert jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience="rbac-abac")["sub"]
    result = cli(app, "rotate-signing-key")
    assert result.exit_code == 1
    assert "the signing key comes from configuration" in result.output


def test_configured_private_key_is_published_with_its_thumbprint_as_kid(make_app, sqlite_url):
    key = ec.generate_private_key(ec.SECP256R1())
    app = make_app(sqlite_url, RBAC_ABAC_JWT_SECRET=None, RBAC_ABAC_JWT_PRIVATE_KEY=pem(key))
    assert "Generated" not in cli(app, "init-db").output
    (jwk,) = app.test_client().get("/.well-known/jwks.json").json["keys"]
    assert jwk["alg"] == "ES256"
    assert jwk["kid"] == thumbprint(jwk)
    Api(app.test_client()).user("alice")
    token = login(app.test_client()).json["access_token"]
    assert jwt.get_unverified_header(token)["kid"] == jwk["kid"]
    with app.app_context():
        assert db.session.query(SigningKey).count() == 0


def test_thumbprint_is_rfc_7638s_example():
    # RFC 7638, section 3.1.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
        "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-"
        "65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNL"
        "yrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJz"
        "KnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_rotation_publishes_both_keys_until_the_old_tokens_expire(
    make_app, database_url, real_redis
):
    app = own_keys_app(make_app, database_url, IDP_TOKEN_LIFETIME=2, IDP_SIGNING_KEY_LEEWAY=1)
    client = app.test_client()
    Api(client).user("alice")
    (old,) = client.get("/.well-known/jwks.json").json["keys"]
    result = cli(app, "rotate-signing-key")
    assert result.exit_code == 0, result.output
    jwks = client.get("/.well-known/jwks.json").json["keys"]
    assert [k["kid"] for k in jwks][1:] == [old["kid"]]
    new = jwks[0]
    assert new["kid"] != old["kid"]
    assert result.output.startswith(f"New signing key {new['kid']} (RS256).\nRetired {old['kid']}")
    token = login(client).json["access_token"]
    assert jwt.get_unverified_header(token)["kid"] == new["kid"]
    time.sleep(3.2)  # lifetime 2 + leeway 1
    assert client.get("/.well-known/jwks.json").json["keys"] == [new]
    # The next rotation deletes the key whose publication ended.
    assert cli(app, "rotate-signing-key").exit_code == 0
    with app.app_context():
        kids = {row.kid for row in db.session.query(SigningKey)}
    assert old["kid"] not in kids and new["kid"] in kids and len(kids) == 2


def test_no_key_yet_is_503_naming_the_fix(make_app, sqlite_url):
    app = make_app(sqlite_url, **OWN_KEYS)
    Api(app.test_client()).user("alice")
    r = login(app.test_client())
    assert r.status_code == 503
    assert r.json["error"] == (
        "token issuing is not configured: no signing key (run `flask --app idp_app init-db` "
        "or `rotate-signing-key`, or set RBAC_ABAC_JWT_PRIVATE_KEY or RBAC_ABAC_JWT_SECRET)"
    )
    assert app.test_client().get("/.well-known/jwks.json").json == {"keys": []}


def test_tokens_are_issued_per_audience(api):
    api.service("billing_api")
    api.user("alice")
    r = login(api.client, audience="billing_api")
    assert r.status_code == 200, r.json
    claims = jwt.decode(
        r.json["access_token"], JWT_SECRET, algorithms=["HS256"], audience="billing_api"
    )
    assert claims["aud"] == "billing_api"
    claims = jwt.decode(
        login(api.client).json["access_token"],
        JWT_SECRET,
        algorithms=["HS256"],
        audience="rbac-abac",
    )
    assert claims["aud"] == "rbac-abac"


@pytest.mark.parametrize(
    ("audience", "error"),
    [
        ("reports_api", "audience 'reports_api' is not a registered service"),
        (7, "audience must be a string: the name of a registered service"),
        (["billing_api"], "audience must be a string: the name of a registered service"),
    ],
)
def test_an_audience_that_is_not_a_registered_service_is_400(api, audience, error):
    api.service("billing_api")
    api.user("alice")
    r = login(api.client, audience=audience)
    assert r.status_code == 400
    assert r.json == {"success": False, "error": error}


def test_a_malformed_audience_is_400_naming_the_field(api):
    api.user("alice")
    r = login(api.client, audience="bad name!")
    assert r.status_code == 400
    assert r.json == {
        "success": False,
        "error": (
            "invalid service_name 'bad name!': expected 1-64 characters from A-Z a-z 0-9 _ . -"
        ),
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"IDP_SIGNING_ALGORITHM": "HS256"}, "IDP_SIGNING_ALGORITHM must be one of RS256, ES256"),
        ({"IDP_SIGNING_KEY_LEEWAY": "-1"}, "IDP_SIGNING_KEY_LEEWAY must be a positive integer"),
        (
            {"RBAC_ABAC_JWT_SECRET": None, "RBAC_ABAC_JWT_PRIVATE_KEY": "not a key"},
            "RBAC_ABAC_JWT_PRIVATE_KEY must be a PEM private key",
        ),
        (
            {
                "RBAC_ABAC_JWT_SECRET": None,
                "RBAC_ABAC_JWT_PRIVATE_KEY": pem(ec.generate_private_key(ec.SECP384R1())),
            },
            "RBAC_ABAC_JWT_PRIVATE_KEY must be an unencrypted RSA or EC P-256 key (ValueError)",
        ),
    ],
)
def test_signing_settings_are_validated(sqlite_url, overrides, message):
    config = {
        "TESTING": True,
        "DATABASE_URL": sqlite_url,
        "IDP_ADMIN_TOKEN": ADMIN_TOKEN,
        "RBAC_ABAC_JWT_SECRET": JWT_SECRET,
        **overrides,
    }
    with pytest.raises(ConfigurationError) as info:
        create_app(config)
    assert str(info.value).startswith(message)


def test_an_rsa_private_key_signs_rs256(make_app, sqlite_url):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app = make_app(sqlite_url, RBAC_ABAC_JWT_SECRET=None, RBAC_ABAC_JWT_PRIVATE_KEY=pem(key))
    (jwk,) = app.test_client().get("/.well-known/jwks.json").json["keys"]
    assert (jwk["kty"], jwk["alg"]) == ("RSA", "RS256")

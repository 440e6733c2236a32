"""JWKSKeys and the verifier over a JWKS served on a loopback port (a real HTTP fetch).

The key set here is a third party's (as Keycloak or Auth0 would publish): EC and RSA keys made by
the test, served by a small WSGI app whose answer the test controls.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from flask_rbac_abac import RBACABAC, ConfigurationError
from flask_rbac_abac.config import load
from flask_rbac_abac.errors import IdentityUnavailable, InvalidIdentity
from flask_rbac_abac.identity import JWKSKeys, JWTVerifier

from .conftest import library_config
from .wsgi_server import Served

ISSUER = "https://tenant.example.test/"


class KeySet:
    """Private keys by kid; ``document()`` is the JWKS of their public halves."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[Any, str]] = {}
        self.body: bytes | None = None  # when set, served instead of the document

    def add(self, kid: str, algorithm: str = "ES256") -> None:
        key = (
            ec.generate_private_key(ec.SECP256R1())
            if algorithm == "ES256"
            else rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
        self.keys[kid] = (key, algorithm)

    def document(self) -> dict[str, Any]:
        out = []
        for kid, (key, algorithm) in self.keys.items():
            tool = ECAlgorithm if algorithm == "ES256" else RSAAlgorithm
            jwk = tool.to_jwk(key.public_key(), as_dict=True)
            out.append({**jwk, "kid": kid, "alg": algorithm, "use": "sig"})
        return {"keys": out}

    def token(self, kid: str, claims: dict[str, Any] | None = None, **header: Any) -> str:
        key, algorithm = self.keys[kid]
        payload = {"sub": "42", "aud": "billing_api", "iss": ISSUER, "exp": time.time() + 300}
        payload.update(claims or {})
        return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid, **header})


@pytest.fixture(name="keyset")
def keyset_fixture() -> KeySet:
    keys = KeySet()
    keys.add("k1")
    return keys


@pytest.fixture
def jwks(keyset: KeySet) -> Iterator[Served]:
    app = Flask("jwks")

    @app.get("/jwks.json")
    def document() -> Any:
        if keyset.body is not None:
            return keyset.body, 200, {"Content-Type": "application/json"}
        return keyset.document()

    served = Served(app)
    yield served
    served.stop()


def verifier(url: str, **options: Any) -> JWTVerifier:
    user_claim = options.pop("user_claim", "sub")
    return JWTVerifier(
        JWKSKeys(url + "/jwks.json", **options),
        ["ES256", "RS256"],
        audience="billing_api",
        issuer=ISSUER,
        user_claim=user_claim,
    )


def test_a_third_partys_tokens_verify_by_kid(jwks: Served, keyset: KeySet) -> None:
    keyset.add("k2", "RS256")
    check = verifier(jwks.url)
    assert check.user_id("Bearer " + keyset.token("k1")) == 42
    assert check.user_id("Bearer " + keyset.token("k2", {"sub": "7"})) == 7
    assert jwks.hits["/jwks.json"] == 1


def test_an_unknown_kid_refetches_once_then_is_refused(jwks: Served, keyset: KeySet) -> None:
    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    check = verifier(jwks.url, timer=clock)
    assert check.user_id("Bearer " + keyset.token("k1")) == 42
    assert jwks.hits["/jwks.json"] == 1
    keyset.add("k2")  # published after the service fetched: a rotation
    assert check.user_id("Bearer " + keyset.token("k2", {"sub": "2"})) == 2
    assert jwks.hits["/jwks.json"] == 2
    # A made-up kid: refetches are limited, so a flood of them costs the IdP nothing more.
    stranger = KeySet()
    stranger.add("made-up")
    for _ in range(5):
        assert check.user_id("Bearer " + stranger.token("made-up")) is None
    assert jwks.hits["/jwks.json"] == 2
    clock.now += 5.0
    assert check.user_id("Bearer " + stranger.token("made-up")) is None
    assert jwks.hits["/jwks.json"] == 3


@pytest.mark.parametrize(
    ("header", "claims"),
    [
        ({"kid": None}, {}),  # no kid at all
        ({"alg": "RS256"}, {}),  # an RSA alg naming an EC key (PyJWT would raise TypeError)
        ({"alg": "ES384"}, {}),  # allowed nowhere here
        ({"alg": "none"}, {}),
        ({}, {"aud": "reports_api"}),
        ({}, {"iss": "https://other.example.test/"}),
        ({}, {"exp": time.time() - 10}),
    ],
)
def test_tokens_that_do_not_fit_are_refused(
    jwks: Served, keyset: KeySet, header: dict[str, Any], claims: dict[str, Any]
) -> None:
    token = keyset.token("k1", claims)
    if header.get("alg"):
        head, payload, signature = token.split(".")
        doc = json.loads(jwt.utils.base64url_decode(head))
        head = jwt.utils.base64url_encode(json.dumps({**doc, **header}).encode()).decode()
        token = f"{head}.{payload}.{signature}"
    elif "kid" in header:
        key, algorithm = keyset.keys["k1"]
        payload = {"sub": "42", "aud": "billing_api", "iss": ISSUER, "exp": time.time() + 60}
        token = jwt.encode(payload, key, algorithm=algorithm)
    assert verifier(jwks.url).user_id("Bearer " + token) is None


def test_the_user_claim_option(jwks: Served, keyset: KeySet) -> None:
    check = verifier(jwks.url, user_claim="uid")
    # Keycloak-like: sub is a UUID, the user id is in a claim of its own.
    sub = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
    assert check.user_id("Bearer " + keyset.token("k1", {"sub": sub, "uid": "9"})) == 9
    assert check.user_id("Bearer " + keyset.token("k1", {"sub": sub})) is None  # required
    with pytest.raises(InvalidIdentity, match=r"^the token's uid is not a user id$"):
        check.user_id("Bearer " + keyset.token("k1", {"uid": "0123"}))
    with pytest.raises(InvalidIdentity, match=r"^the token's sub is not a user id$"):
        verifier(jwks.url).user_id("Bearer " + keyset.token("k1", {"sub": sub}))


def test_a_jwks_that_is_not_json_is_identity_unavailable(jwks: Served, keyset: KeySet) -> None:
    keyset.body = b"<html>maintenance</html>"
    with pytest.raises(IdentityUnavailable):
        verifier(jwks.url).user_id("Bearer " + keyset.token("k1"))
    keyset.body = b'{"keys": []}'
    with pytest.raises(IdentityUnavailable):
        verifier(jwks.url).user_id("Bearer " + keyset.token("k1"))


@pytest.mark.faults
def test_a_jwks_fetch_that_hangs_is_bounded_by_the_timeout(keyset: KeySet) -> None:
    # A listening socket that never answers: the connection is accepted by the kernel, the
    # request is read by no one.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        check = verifier(url, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(IdentityUnavailable, match="cannot be fetched"):
            check.user_id("Bearer " + keyset.token("k1"))
        elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 3.0


@pytest.mark.faults
def test_the_extension_answers_503_when_the_jwks_hangs(keyset: KeySet, key_prefix: str) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        app = Flask(__name__)
        app.config.update(
            library_config(
                key_prefix,
                RBAC_ABAC_JWT_SECRET=None,
                RBAC_ABAC_JWKS_URL=f"http://127.0.0.1:{silent.getsockname()[1]}/jwks.json",
                RBAC_ABAC_JWKS_TIMEOUT=0.3,
                RBAC_ABAC_JWT_AUDIENCE="billing_api",
                RBAC_ABAC_JWT_ISSUER=ISSUER,
            )
        )
        rbac = RBACABAC(app)

        @app.get("/who")
        def who() -> Any:
            return {"user": rbac.load_identity()}

        headers = {"Authorization": "Bearer " + keyset.token("k1")}
        r = app.test_client().get("/who", headers=headers)
    assert r.status_code == 503
    assert r.json == {
        "success": False,
        "error": "the identity cannot be verified now",
        "reason": "identity_unavailable",
    }


def test_the_extension_refuses_a_bad_user_claim_as_invalid_identity(
    jwks: Served, keyset: KeySet, key_prefix: str
) -> None:
    app = Flask(__name__)
    app.config.update(
        library_config(
            key_prefix,
            RBAC_ABAC_JWT_SECRET=None,
            RBAC_ABAC_JWKS_URL=jwks.url + "/jwks.json",
            RBAC_ABAC_JWT_AUDIENCE="billing_api",
            RBAC_ABAC_JWT_ISSUER=ISSUER,
            RBAC_ABAC_JWT_USER_CLAIM="uid",
            RBAC_ABAC_JWT_ALGORITHMS="ES256",
        )
    )
    rbac = RBACABAC(app)

    @app.get("/who")
    def who() -> Any:
        return {"user": rbac.load_identity()}

    client = app.test_client()
    r = client.get("/who", headers={"Authorization": "Bearer " + keyset.token("k1", {"uid": "5"})})
    assert (r.status_code, r.json) == (200, {"user": 5})
    r = client.get("/who", headers={"Authorization": "Bearer " + keyset.token("k1", {"uid": "x"})})
    assert (r.status_code, r.json["reason"]) == (401, "invalid_identity")
    keyset.add("rsa", "RS256")  # RS256 is not in this service's allow-list
    r = client.get("/who", headers={"Authorization": "Bearer " + keyset.token("rsa", {"uid": "5"})})
    assert (r.status_code, r.json["reason"]) == (401, "no_identity")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"RBAC_ABAC_JWKS_URL": "ftp://x/jwks"},
            "RBAC_ABAC_JWKS_URL must be an http:// or https://",
        ),
        (
            {"RBAC_ABAC_JWKS_URL": "https://idp/jwks.json"},
            "more than one of RBAC_ABAC_JWT_SECRET, RBAC_ABAC_JWT_PUBLIC_KEY and "
            "RBAC_ABAC_JWKS_URL",
        ),
        (
            {
                "RBAC_ABAC_JWT_SECRET": None,
                "RBAC_ABAC_JWKS_URL": "https://idp/jwks.json",
                "RBAC_ABAC_JWT_ALGORITHMS": "RS256,HS256",
            },
            "RBAC_ABAC_JWT_ALGORITHMS: 'HS256' is not allowed with a public key or "
            "RBAC_ABAC_JWKS_URL",
        ),
        (
            {"RBAC_ABAC_JWT_ALGORITHMS": ["RS256"]},
            "RBAC_ABAC_JWT_ALGORITHMS: 'RS256' is not allowed with RBAC_ABAC_JWT_SECRET",
        ),
        ({"RBAC_ABAC_JWT_USER_CLAIM": ""}, "RBAC_ABAC_JWT_USER_CLAIM must be a non-empty string"),
        (
            {
                "RBAC_ABAC_JWT_SECRET": None,
                "RBAC_ABAC_JWKS_URL": "https://idp/jwks.json",
                "RBAC_ABAC_JWKS_TIMEOUT": 0,
            },
            "RBAC_ABAC_JWKS_TIMEOUT must be a positive number of seconds",
        ),
    ],
)
def test_jwks_settings_are_validated(key_prefix: str, config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load(library_config(key_prefix, **config))
    assert str(info.value).startswith(message)


def test_jwks_settings_defaults(key_prefix: str) -> None:
    settings = load(
        library_config(key_prefix, RBAC_ABAC_JWT_SECRET=None, RBAC_ABAC_JWKS_URL="https://i/j/")
    )
    assert settings.jwks_url == "https://i/j"
    assert (settings.jwks_timeout, settings.jwks_lifespan) == (2.0, 300)
    assert settings.jwt_algorithms == ("RS256", "ES256")
    assert settings.jwt_user_claim == "sub"
    assert load(library_config(key_prefix)).jwt_algorithms == ("HS256",)


@pytest.mark.faults
def test_the_last_set_verifies_for_max_stale_when_a_due_fetch_fails(keyset: KeySet) -> None:
    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    app = Flask("jwks")
    app.get("/jwks.json")(keyset.document)
    served = Served(app)
    clock = Clock()
    check = verifier(served.url, lifespan=1, max_stale=30, timer=clock)
    assert check.user_id("Bearer " + keyset.token("k1", {"sub": "1"})) == 1
    served.stop()  # the IdP goes away
    time.sleep(1.2)  # the set is due again
    clock.now += 10
    assert check.user_id("Bearer " + keyset.token("k1", {"sub": "2"})) == 2
    clock.now += 21  # 31 s since the set was last obtained: past max_stale
    with pytest.raises(IdentityUnavailable):
        check.user_id("Bearer " + keyset.token("k1", {"sub": "3"}))


@pytest.mark.faults
def test_after_a_failed_fetch_requests_answer_at_once_for_a_while(keyset: KeySet) -> None:
    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    def connections(listener: socket.socket) -> int:
        """The fetches tried so far: connections the kernel accepted into the backlog."""
        listener.setblocking(False)
        count = 0
        while True:
            try:
                accepted, _ = listener.accept()
            except BlockingIOError:
                return count
            accepted.close()
            count += 1

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        clock = Clock()
        check = verifier(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5, timer=clock)
        with pytest.raises(IdentityUnavailable):
            check.user_id("Bearer " + keyset.token("k1"))  # pays the timeout
        assert connections(silent) == 1
        for sub in ("2", "3", "4"):
            with pytest.raises(IdentityUnavailable):
                check.user_id("Bearer " + keyset.token("k1", {"sub": sub}))
        assert connections(silent) == 0  # no fetch tried: answered without waiting on the IdP
        clock.now += 5.0
        with pytest.raises(IdentityUnavailable):
            check.user_id("Bearer " + keyset.token("k1", {"sub": "5"}))
        assert connections(silent) == 1  # tried again, and timed out again

"""JWTVerifier: the verified-token cache never outlives a token's ``exp``."""

from __future__ import annotations

import time

import jwt
import pytest

from flask_rbac_abac.identity import JWTVerifier

from .conftest import JWT_SECRET


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def token(exp: float, sub: str = "1") -> str:
    claims = {"sub": sub, "aud": "rbac-abac", "iss": "rbac-abac-idp", "exp": int(exp)}
    return "Bearer " + jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def verifier(clock: Clock, leeway: float = 0.0) -> JWTVerifier:
    return JWTVerifier(
        JWT_SECRET,
        "HS256",
        audience="rbac-abac",
        issuer="rbac-abac-idp",
        leeway=leeway,
        timer=clock,
    )


def test_a_cached_token_stops_working_at_its_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    exp = int(clock.now) + 30
    header = token(exp)
    v = verifier(clock)
    assert v.user_id(header) == 1
    # From here on the answer must come from the cache: a second verification fails the test.
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: pytest.fail("token verified twice"))
    clock.now = exp - 0.5
    assert v.user_id(header) == 1
    clock.now = exp
    assert v.user_id(header) is None


def test_leeway_extends_a_cached_token_by_exactly_the_leeway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    exp = int(clock.now) + 30
    header = token(exp)
    v = verifier(clock, leeway=5)
    assert v.user_id(header) == 1
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: pytest.fail("token verified twice"))
    clock.now = exp + 4.5
    assert v.user_id(header) == 1
    clock.now = exp + 5
    assert v.user_id(header) is None


def test_an_expired_cached_token_is_dropped_and_not_served_again() -> None:
    clock = Clock()
    exp = int(clock.now) + 30
    header = token(exp)
    v = verifier(clock)
    assert v.user_id(header) == 1
    clock.now = exp + 1
    assert v.user_id(header) is None
    # The cache no longer holds it: going back in time re-verifies (and PyJWT, on the real
    # clock, still accepts it), so a dropped entry is not a stuck denial either.
    clock.now = exp - 10
    assert v.user_id(header) == 1

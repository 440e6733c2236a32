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


def test_verifier_for_builds_the_verifier_the_settings_describe() -> None:
    from flask_rbac_abac.config import Settings
    from flask_rbac_abac.defaults import DEFAULT_ASYMMETRIC_ALGORITHMS
    from flask_rbac_abac.identity import JWKSKeys, verifier_for

    assert verifier_for(Settings(service_name="s")) is None
    settings = Settings(
        service_name="s", jwt_secret=JWT_SECRET, jwt_issuer="iss-x", token_cache_size=3
    )
    verifier = verifier_for(settings)
    assert verifier is not None
    assert (list(verifier._algorithms), verifier._issuer) == (["HS256"], "iss-x")
    token = jwt.encode(
        {"sub": "7", "aud": "rbac-abac", "iss": "iss-x", "exp": int(time.time()) + 60},
        JWT_SECRET,
        algorithm="HS256",
    )
    assert verifier.user_id(f"Bearer {token}") == 7
    jwks = verifier_for(
        Settings(
            service_name="s",
            jwks_url="http://idp.test/jwks",
            jwks_timeout=1.5,
            jwks_lifespan=77,
            max_stale=9.0,
        )
    )
    assert jwks is not None and list(jwks._algorithms) == list(DEFAULT_ASYMMETRIC_ALGORITHMS)
    assert isinstance(jwks._keys, JWKSKeys)
    assert (jwks._keys._max_stale, jwks._keys._client.jwk_set_cache.lifespan) == (9.0, 77)
    assert jwks._keys._client.timeout == 1.5


def test_the_token_cache_keeps_the_latest_cache_size_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    exp = int(clock.now) + 60
    headers = [token(exp, sub=str(user)) for user in (1, 2, 3)]
    v = JWTVerifier(
        JWT_SECRET, "HS256", audience="rbac-abac", issuer="rbac-abac-idp", cache_size=2, timer=clock
    )
    decoded: list[str] = []
    decode = jwt.decode

    def counting(token: str, *args: object, **kwargs: object) -> object:
        decoded.append(token)
        return decode(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting)
    assert [v.user_id(h) for h in headers] == [1, 2, 3]
    assert list(v._cache) == headers[1:]  # the header verified longest ago went first
    assert [v.user_id(h) for h in headers[1:]] == [2, 3]
    assert len(decoded) == 3  # both answered from the cache
    assert v.user_id(headers[0]) == 1  # verified again
    assert len(decoded) == 4 and list(v._cache) == [headers[2], headers[0]]
    # keyed by the whole header: the same token sent another way is verified on its own
    other = "bearer  " + headers[2].partition(" ")[2]
    assert v.user_id(other) == 3 and len(decoded) == 5

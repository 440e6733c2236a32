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


# -- the edges of user_id: each one decides between a user id, None and InvalidIdentity ------


def claims(**extra: object) -> dict[str, object]:
    base = {"sub": "1", "aud": "rbac-abac", "iss": "rbac-abac-idp", "exp": int(time.time()) + 60}
    return {**base, **extra}


def bearer_for(payload: dict[str, object], scheme: str = "Bearer") -> str:
    return f"{scheme} " + jwt.encode(payload, JWT_SECRET, algorithm="HS256")


def test_the_default_leeway_is_none_at_all() -> None:
    clock = Clock()
    exp = int(clock.now) + 30
    v = JWTVerifier(JWT_SECRET, "HS256", audience="rbac-abac", issuer="rbac-abac-idp", timer=clock)
    header = token(exp)
    assert v.user_id(header) == 1
    clock.now = exp + 0.5  # cached, half a second past its exp: no grace unless configured
    assert v.user_id(header) is None


def test_the_leeway_reaches_pyjwt_too() -> None:
    # Expired two seconds ago on the real clock: PyJWT itself accepts it only with the leeway.
    header = bearer_for(claims(exp=int(time.time()) - 2))
    assert verifier(Clock(), leeway=30).user_id(header) == 1
    assert verifier(Clock()).user_id(header) is None


@pytest.mark.parametrize(
    ("key", "algorithm", "named"),
    [
        (JWT_SECRET, "RS256", "['RS256']"),
        (JWT_SECRET, ["HS256", "RS256"], "['HS256', 'RS256']"),
        (JWT_SECRET, [], "[]"),
        ("-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----", "HS256", "['HS256']"),
    ],
)
def test_an_algorithm_the_key_cannot_use_is_refused_by_name(
    key: str, algorithm: str | list[str], named: str
) -> None:
    with pytest.raises(ValueError) as raised:
        JWTVerifier(key, algorithm, audience="a", issuer="i")
    assert str(raised.value) == f"unsupported algorithm(s) {named} for this key"


def test_an_expired_cached_token_is_verified_again_when_next_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    exp = int(clock.now) + 30
    header = token(exp)
    v = verifier(clock)
    assert v.user_id(header) == 1
    clock.now = exp
    assert v.user_id(header) is None
    decoded: list[str] = []
    decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda t, *a, **k: decoded.append(t) or decode(t, *a, **k))
    clock.now = exp - 10  # the dropped entry is not served from the cache: it is verified again
    assert v.user_id(header) == 1
    assert decoded == [header.partition(" ")[2]]


def test_an_expired_entry_another_thread_already_dropped_is_no_error() -> None:
    clock = Clock()
    exp = int(clock.now) + 30
    header = token(exp)
    v = verifier(clock)
    assert v.user_id(header) == 1
    seen = v._cache[header]

    class Raced(dict):  # type: ignore[type-arg]
        """Another request dropped the expired entry between this one's read and its pop."""

        def get(self, key: object, default: object = None) -> object:
            return seen

    v._cache = Raced()  # type: ignore[assignment]
    clock.now = exp + 1
    assert v.user_id(header) is None


def test_a_header_of_exactly_the_maximum_length_is_verified() -> None:
    from flask_rbac_abac.identity import MAX_TOKEN_LENGTH

    header = bearer_for(claims())
    padded = header + " " * (MAX_TOKEN_LENGTH - len(header))  # the token is stripped
    assert len(padded) == MAX_TOKEN_LENGTH
    assert verifier(Clock()).user_id(padded) == 1
    assert verifier(Clock()).user_id(padded + " ") is None


@pytest.mark.parametrize("scheme", ["Basic", "Token", "Bearer:", "JWT"])
def test_only_the_bearer_scheme_is_read(scheme: str) -> None:
    assert verifier(Clock()).user_id(bearer_for(claims(), scheme=scheme)) is None


def test_bearer_without_a_token_is_none() -> None:
    assert verifier(Clock()).user_id("Bearer    ") is None
    assert verifier(Clock()).user_id("Bearer") is None


def test_a_signed_token_whose_subject_is_not_a_string_is_invalid_not_anonymous(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from flask_rbac_abac.errors import InvalidIdentity

    # PyJWT's own subject check is off, so a signed but unusable subject is told apart (401
    # invalid_identity) from a bad token (401 no_identity), and logged as such.
    caplog.set_level("INFO", logger="flask_rbac_abac.identity")
    with pytest.raises(InvalidIdentity):
        verifier(Clock()).user_id(bearer_for(claims(sub=7)))
    assert [r.getMessage() for r in caplog.records] == [
        "rejected bearer token: its sub is not a user id"
    ]


def test_a_rejected_token_is_logged_by_the_kind_of_error_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="flask_rbac_abac.identity")
    expired = bearer_for(claims(exp=int(time.time()) - 60))
    assert verifier(Clock()).user_id(expired) is None
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "rejected bearer token: ExpiredSignatureError")
    ]
    assert expired.partition(" ")[2] not in caplog.text


def test_verifier_for_passes_the_token_cache_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask_rbac_abac.config import Settings
    from flask_rbac_abac.identity import verifier_for

    v = verifier_for(Settings(service_name="s", jwt_secret=JWT_SECRET, token_cache_size=1))
    assert v is not None
    decoded: list[str] = []
    decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda t, *a, **k: decoded.append(t) or decode(t, *a, **k))
    first, second = bearer_for(claims(sub="1")), bearer_for(claims(sub="2"))
    assert [v.user_id(first), v.user_id(second), v.user_id(first)] == [1, 2, 1]
    assert len(decoded) == 3  # a cache of one: the second token pushed the first out

"""JWKSKeys without a server: PyJWT's real ``PyJWKClient`` over a scripted ``urllib`` opener.

PyJWT fetches with ``urllib.request`` (not ``requests``, so no ``responses``): the fixture
replaces ``urllib.request.build_opener`` with :class:`Endpoint`, which answers each fetch as the
test scripted it and records the URL and timeout asked for. One fake clock drives both
JWKSKeys' timer and PyJWT's set cache, so lifespans, refetch intervals and ``max_stale`` are
stepped through exactly, in microseconds (these tests are the mutation run's for JWKSKeys; the
HTTP ones are tests/test_jwks.py).
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import jwt
import jwt.api_jwk
import jwt.jwk_set_cache
import pytest

from flask_rbac_abac.defaults import DEFAULT_JWKS_LIFESPAN, DEFAULT_JWKS_TIMEOUT
from flask_rbac_abac.errors import IdentityUnavailable
from flask_rbac_abac.identity import MIN_REFETCH_INTERVAL, JWKSKeys

from .test_jwks import KeySet, keyset_fixture  # noqa: F401 - the keyset fixture (key k1)

URL = "https://idp.example.test/.well-known/jwks.json"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Endpoint:
    """Stands in for ``urllib.request.build_opener``: each fetch takes the next scripted answer.

    An answer is bytes (the body), an exception (raised by ``open``), or a callable returning
    the response object. With the script empty, the key set's current document is served.
    """

    def __init__(self, keyset: KeySet) -> None:
        self.keyset = keyset
        self.script: list[bytes | Exception | Callable[[], Any]] = []
        self.fetches: list[tuple[str, float]] = []

    def __call__(self, *handlers: Any) -> Endpoint:
        return self

    def open(self, request: urllib.request.Request, timeout: float) -> Any:
        self.fetches.append((request.full_url, timeout))
        answer = self.script.pop(0) if self.script else json.dumps(self.keyset.document()).encode()
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer()
        return io.BytesIO(answer)


class Broken(io.BytesIO):
    """A response whose body breaks off while it is read."""

    def read(self, *args: Any) -> bytes:
        raise ConnectionResetError("peer reset")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    # PyJWT's set cache stamps and expires with its own clock: the same fake one, so lifespans
    # are exact.
    fake_time = SimpleNamespace(monotonic=clock)
    monkeypatch.setattr(jwt.jwk_set_cache, "time", fake_time)
    monkeypatch.setattr(jwt.api_jwk, "time", fake_time)
    return clock


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch, keyset: KeySet) -> Endpoint:
    fake = Endpoint(keyset)
    monkeypatch.setattr(urllib.request, "build_opener", fake)
    return fake


def keys(clock: Clock, **options: Any) -> JWKSKeys:
    return JWKSKeys(URL, timer=clock, **options)


def public_numbers(key: Any) -> Any:
    return key.public_numbers()


def test_the_key_named_by_kid_is_fetched_from_the_url_with_the_timeout(
    endpoint: Endpoint, keyset: KeySet, clock: Clock
) -> None:
    keyset.add("k2", "RS256")
    source = keys(clock, timeout=0.75)
    key = source.key_for(keyset.token("k2"))
    assert public_numbers(key) == public_numbers(keyset.keys["k2"][0].public_key())
    key = source.key_for(keyset.token("k1"))
    assert public_numbers(key) == public_numbers(keyset.keys["k1"][0].public_key())
    assert endpoint.fetches == [(URL, 0.75)]  # one fetch for both: the set is cached


def test_the_defaults(endpoint: Endpoint, keyset: KeySet) -> None:
    source = JWKSKeys(URL)
    source.key_for(keyset.token("k1"))
    assert endpoint.fetches == [(URL, DEFAULT_JWKS_TIMEOUT)]
    assert source._client.jwk_set_cache is not None
    assert source._client.jwk_set_cache.lifespan == DEFAULT_JWKS_LIFESPAN
    assert source._min_refetch_interval == MIN_REFETCH_INTERVAL == 5.0
    assert source._max_stale == 0.0


def test_the_set_is_fetched_again_after_its_lifespan(
    endpoint: Endpoint, keyset: KeySet, clock: Clock
) -> None:
    source = keys(clock, lifespan=60)
    token = keyset.token("k1")
    source.key_for(token)
    clock.now += 60
    source.key_for(token)
    assert len(endpoint.fetches) == 1
    clock.now += 0.5
    source.key_for(token)
    assert len(endpoint.fetches) == 2


def test_an_unknown_kid_refetches_at_most_once_per_interval(
    endpoint: Endpoint, keyset: KeySet, clock: Clock
) -> None:
    source = keys(clock, min_refetch_interval=10)
    source.key_for(keyset.token("k1"))
    keyset.add("k2")  # a rotation after the first fetch: found by a refetch
    source.key_for(keyset.token("k2"))
    assert len(endpoint.fetches) == 2
    stranger = KeySet()
    stranger.add("made-up")
    for step in (0, 3, 6.99):  # refused unfetched, and the refusals do not restart the interval
        clock.now = 1000 + step
        with pytest.raises(jwt.InvalidTokenError, match=r"^the token's kid is not in the key set$"):
            source.key_for(stranger.token("made-up"))
    assert len(endpoint.fetches) == 2
    clock.now = 1010  # exactly the interval after the refetch: allowed again
    keyset.add("k3")
    source.key_for(keyset.token("k3"))
    assert len(endpoint.fetches) == 3
    clock.now = 1015
    with pytest.raises(jwt.InvalidTokenError):
        source.key_for(stranger.token("made-up"))
    assert len(endpoint.fetches) == 3


def test_the_first_unknown_kid_refetches_at_once(
    endpoint: Endpoint, keyset: KeySet, clock: Clock
) -> None:
    # No refetch has happened yet, whatever the clock says: the first one is never refused.
    clock.now = 0.0
    source = keys(clock)
    source.key_for(keyset.token("k1"))
    keyset.add("k2")
    source.key_for(keyset.token("k2"))
    assert len(endpoint.fetches) == 2


def with_header(token: str, **header: Any) -> str:
    head, payload, signature = token.split(".")
    doc = {**json.loads(jwt.utils.base64url_decode(head)), **header}
    doc = {name: value for name, value in doc.items() if value is not None}
    head = jwt.utils.base64url_encode(json.dumps(doc).encode()).decode()
    return f"{head}.{payload}.{signature}"


@pytest.mark.parametrize("kid", [None, ""])
def test_a_token_without_a_kid_is_refused_unfetched(
    endpoint: Endpoint, keyset: KeySet, clock: Clock, kid: str | None
) -> None:
    token = with_header(keyset.token("k1"), kid=kid)
    with pytest.raises(jwt.InvalidTokenError, match=r"^the token names no kid$"):
        keys(clock).key_for(token)
    assert endpoint.fetches == []


@pytest.mark.parametrize("alg", ["RS256", "none", "HS256", "XX999", None])
def test_an_alg_of_another_kind_than_the_key_is_refused(
    endpoint: Endpoint, keyset: KeySet, clock: Clock, alg: str | None
) -> None:
    token = with_header(keyset.token("k1"), alg=alg)
    with pytest.raises(jwt.InvalidTokenError, match=r"^the token's alg does not fit its key$"):
        keys(clock).key_for(token)


@pytest.mark.parametrize(
    "answer",
    [
        b"<html>maintenance</html>",  # not JSON: ValueError
        b"[1, 2]",  # JSON, not an object
        b'{"keys": []}',  # no key
        b'{"keys": [{"kty": "EC", "use": "enc", "kid": "e"}]}',  # no signing key
        urllib.error.URLError("connection refused"),
        TimeoutError("timed out"),
        http.client.RemoteDisconnected("closed"),
        lambda: Broken(b"{}"),  # reset while the body is read: an OSError of its own
    ],
    ids=["html", "array", "empty", "no-sig", "refused", "timeout", "disconnected", "reset"],
)
def test_a_failed_fetch_is_identity_unavailable(
    endpoint: Endpoint,
    keyset: KeySet,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    answer: Any,
) -> None:
    endpoint.script.append(answer)
    with caplog.at_level(logging.WARNING, "flask_rbac_abac.identity"):
        with pytest.raises(
            IdentityUnavailable, match=r"^the token's signing keys cannot be fetched$"
        ) as info:
            keys(clock).key_for(keyset.token("k1"))
    assert isinstance(info.value.__cause__, (jwt.PyJWTError, OSError, ValueError))
    (record,) = caplog.records
    assert record.getMessage() == f"cannot fetch the JWKS: {type(info.value.__cause__).__name__}"


def test_after_a_failed_fetch_none_is_tried_for_the_interval(
    endpoint: Endpoint, keyset: KeySet, clock: Clock
) -> None:
    source = keys(clock, min_refetch_interval=10)
    endpoint.script.append(TimeoutError("timed out"))
    with pytest.raises(IdentityUnavailable):
        source.key_for(keyset.token("k1"))
    for step in (0, 5, 9.99):  # answered at once: no request waits on a hung IdP's timeout
        clock.now = 1000 + step
        with pytest.raises(IdentityUnavailable) as info:
            source.key_for(keyset.token("k1"))
        assert info.value.__cause__ is None
    assert len(endpoint.fetches) == 1
    clock.now = 1010  # the interval has passed: tried again, and this time it answers
    assert source.key_for(keyset.token("k1")) is not None
    assert len(endpoint.fetches) == 2
    # A success forgets the failure: the next due fetch is tried at once.
    clock.now += DEFAULT_JWKS_LIFESPAN + 1
    endpoint.script.append(TimeoutError("timed out"))
    with pytest.raises(IdentityUnavailable):
        source.key_for(keyset.token("k1"))
    assert len(endpoint.fetches) == 3


def test_the_last_set_serves_for_max_stale_after_it_was_last_obtained(
    endpoint: Endpoint, keyset: KeySet, clock: Clock
) -> None:
    source = keys(clock, lifespan=10, max_stale=30, min_refetch_interval=1)
    token = keyset.token("k1")
    source.key_for(token)  # fetched at 1000
    clock.now = 1008
    source.key_for(token)  # from the cache: obtained again at 1008
    endpoint.script.extend([TimeoutError("timed out")] * 3)
    clock.now = 1020  # due, and the fetch fails: the last set, obtained 12 s ago, serves
    assert source.key_for(token) is not None
    clock.now = 1038  # tried again, failed again: exactly max_stale after 1008, still served
    assert source.key_for(token) is not None
    clock.now = 1039.5  # tried again, failed again: past max_stale
    with pytest.raises(IdentityUnavailable):
        source.key_for(token)
    assert len(endpoint.fetches) == 4


def test_without_max_stale_a_failed_due_fetch_is_unavailable(
    endpoint: Endpoint, keyset: KeySet, clock: Clock
) -> None:
    source = keys(clock, lifespan=10)
    token = keyset.token("k1")
    source.key_for(token)
    clock.now += 11
    endpoint.script.append(TimeoutError("timed out"))
    with pytest.raises(IdentityUnavailable):
        source.key_for(token)


def test_a_refetch_for_an_unknown_kid_does_not_fall_back(
    endpoint: Endpoint, keyset: KeySet, clock: Clock
) -> None:
    source = keys(clock, max_stale=300)
    source.key_for(keyset.token("k1"))
    keyset.add("k2")
    endpoint.script.append(TimeoutError("timed out"))
    # The old set cannot hold the new kid: unavailable, not "no such kid" (a 401).
    with pytest.raises(IdentityUnavailable):
        source.key_for(keyset.token("k2"))
    # The known kid still verifies from the cached set meanwhile.
    assert source.key_for(keyset.token("k1")) is not None


def test_while_a_failure_holds_back_fetches_an_unknown_kid_is_still_unavailable(
    endpoint: Endpoint, keyset: KeySet, clock: Clock
) -> None:
    source = keys(clock, lifespan=10, max_stale=300)
    source.key_for(keyset.token("k1"))
    clock.now += 11
    endpoint.script.append(TimeoutError("timed out"))
    assert source.key_for(keyset.token("k1")) is not None  # due, failed: the last set serves
    keyset.add("k2")
    clock.now += 1  # within the interval after the failure: nothing is fetched
    with pytest.raises(IdentityUnavailable):  # still not "no such kid"
        source.key_for(keyset.token("k2"))
    assert len(endpoint.fetches) == 2

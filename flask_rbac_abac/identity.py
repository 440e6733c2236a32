"""Who is calling: the default identity loader verifies JWT bearer tokens.

Verification pins the algorithms (HS256 with a shared secret; RS256/ES256 with a public key or
with the keys an IdP publishes at a JWKS URL, ``RBAC_ABAC_JWT_ALGORITHMS``), and requires
``exp``, ``aud``, ``iss`` and the user claim (``RBAC_ABAC_JWT_USER_CLAIM``, default ``sub``).
Verified tokens are kept in a bounded cache until their ``exp``, so a hot token is not verified
again on every request. Tokens are never logged.

With a JWKS URL the service holds no secret: :class:`JWKSKeys` fetches the key set (PyJWT's
``PyJWKClient``, each socket operation bounded by ``RBAC_ABAC_JWKS_TIMEOUT``), keeps it for
``RBAC_ABAC_JWKS_LIFESPAN`` seconds, and fetches it again when a token names a ``kid`` it does not
hold (a rotated key), at most once per :data:`MIN_REFETCH_INTERVAL` so tokens with made-up kids
cannot turn every request into a fetch. When the set is due again but cannot be fetched, the
last set keeps verifying for up to ``RBAC_ABAC_MAX_STALE`` seconds more (an IdP restart does not
stop every service). Otherwise a token that cannot be verified for want of keys is
:class:`IdentityUnavailable` (503 ``identity_unavailable``): never an allow, and not the caller's
fault (a 401 would tell a valid caller to log in again).

The user claim must be a user id as the IdP issues them: a JSON string of ASCII digits without a
leading zero, between 1 and 2**63-1 (the widest integer key the IdP's databases use). Anything
else (``"alice"``, ``"-1"``, ``"1.0"``, ``"0123"``, ``"٣"``, ``""``, a number, ``true``) comes from
a token that was signed but cannot name one of our users: it is refused as
:class:`InvalidIdentity` before any cache or IdP lookup, so such tokens cost no IdP call.
String ids stay possible through a custom ``identity_loader``."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jwt
from jwt.algorithms import get_default_algorithms

from .config import ASYMMETRIC_ALGORITHMS, Settings
from .defaults import (
    DEFAULT_ASYMMETRIC_ALGORITHMS,
    DEFAULT_JWKS_LIFESPAN,
    DEFAULT_JWKS_TIMEOUT,
    DEFAULT_JWT_USER_CLAIM,
    DEFAULT_TOKEN_CACHE_SIZE,
)
from .errors import IdentityUnavailable, InvalidIdentity

log = logging.getLogger(__name__)

#: Longest Authorization header considered at all; longer ones are refused unread.
MAX_TOKEN_LENGTH = 8192
#: Largest user id a token may name (a signed 64-bit key, as the cache keys allow).
MAX_SUBJECT_ID = 2**63 - 1
#: Fewest seconds between two JWKS fetches caused by unknown ``kid`` values.
MIN_REFETCH_INTERVAL = 5.0
_SUBJECT_RE = re.compile(r"[1-9][0-9]{0,18}")
_ALGORITHMS = get_default_algorithms()


def subject_user_id(sub: object, claim: str = DEFAULT_JWT_USER_CLAIM) -> int:
    """The user id a token's ``sub`` (or ``claim``) names; :class:`InvalidIdentity` unless it is
    canonical.

    Canonical means exactly what the IdP writes, ``str(user.id)``, so one user has one spelling
    and no normalisation (``"0123"``, ``" 1"``, ``"1.0"``) is ever guessed at.
    """
    if isinstance(sub, str) and _SUBJECT_RE.fullmatch(sub):
        user_id = int(sub)
        if user_id <= MAX_SUBJECT_ID:
            return user_id
    raise InvalidIdentity(f"the token's {claim} is not a user id")


class KeySource(Protocol):
    """Where the key that verifies one token comes from."""

    def key_for(self, token: str) -> Any:
        """The verification key for ``token``.

        :raises jwt.PyJWTError: the token names no usable key (the caller answers 401).
        :raises IdentityUnavailable: the keys cannot be obtained (503).
        """
        ...


class JWKSKeys:
    """The keys an IdP publishes at a JWKS URL, picked by the token's ``kid``.

    :param url: the ``jwks_uri`` (our IdP's ``/.well-known/jwks.json``, Keycloak's, Auth0's).
    :param timeout: seconds for each socket operation of a fetch.
    :param lifespan: seconds a fetched set is used before it is fetched again.
    :param min_refetch_interval: fewest seconds between two fetches forced by an unknown ``kid``.
    :param max_stale: seconds the last set is still used when a due fetch fails.
    :param timer: monotonic clock, for tests.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_JWKS_TIMEOUT,
        lifespan: float = DEFAULT_JWKS_LIFESPAN,
        min_refetch_interval: float = MIN_REFETCH_INTERVAL,
        max_stale: float = 0.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = jwt.PyJWKClient(
            url, cache_keys=False, cache_jwk_set=True, lifespan=lifespan, timeout=timeout
        )
        self._min_refetch_interval = min_refetch_interval
        self._max_stale = max_stale
        self._timer = timer
        self._last_refetch: float | None = None
        #: When the set was last obtained (fetched or from the cache), and its keys.
        self._last_good: tuple[float, list[jwt.PyJWK]] | None = None
        #: When a fetch last failed: for ``min_refetch_interval`` no request tries again, so a
        #: hung IdP costs one request its timeout, not every request queued on the lock.
        self._failed_at: float | None = None
        # One fetch at a time: concurrent requests for a new kid wait for it, not stampede.
        self._lock = threading.Lock()

    def key_for(self, token: str) -> Any:
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise jwt.InvalidTokenError("the token names no kid")
        with self._lock:
            key = jwt.PyJWKClient.match_kid(self._signing_keys(refresh=False), kid)
            if key is None and self._may_refetch():
                key = jwt.PyJWKClient.match_kid(self._signing_keys(refresh=True), kid)
        if key is None:
            raise jwt.InvalidTokenError("the token's kid is not in the key set")
        # PyJWT would raise TypeError (not a PyJWTError) for a key of another kind than the alg.
        wanted = _ALGORITHMS.get(str(header.get("alg")))
        if wanted is None or type(wanted) is not type(key.Algorithm):
            raise jwt.InvalidTokenError("the token's alg does not fit its key")
        return key.key

    def _may_refetch(self) -> bool:
        now = self._timer()
        if self._last_refetch is not None and now - self._last_refetch < self._min_refetch_interval:
            return False
        self._last_refetch = now
        return True

    def _signing_keys(self, *, refresh: bool) -> list[jwt.PyJWK]:
        failed = self._failed_at
        if failed is not None and self._timer() - failed < self._min_refetch_interval:
            return self._fallback(refresh, None)
        try:
            keys = self._client.get_signing_keys(refresh=refresh)
        # Unreachable, timed out, an HTTP error, not JSON, or no usable key: not the caller's.
        except (jwt.PyJWTError, OSError, ValueError) as exc:
            log.warning("cannot fetch the JWKS: %s", type(exc).__name__)
            self._failed_at = self._timer()
            return self._fallback(refresh, exc)
        self._failed_at = None
        self._last_good = (self._timer(), keys)
        return keys

    def _fallback(self, refresh: bool, exc: Exception | None) -> list[jwt.PyJWK]:
        """The last set while within ``max_stale``; else :class:`IdentityUnavailable`."""
        last = self._last_good
        # A refetch for an unknown kid cannot fall back: the old set does not hold that kid.
        if not refresh and last is not None and self._timer() - last[0] <= self._max_stale:
            return last[1]
        raise IdentityUnavailable("the token's signing keys cannot be fetched") from exc


class _StaticKey:
    def __init__(self, key: str) -> None:
        self._key = key

    def key_for(self, token: str) -> Any:
        return self._key


class JWTVerifier:
    """Turns an ``Authorization: Bearer`` header value into a user id, or ``None``.

    :param key: the HS256 secret, a PEM public key, or a :class:`KeySource` such as
        :class:`JWKSKeys`.
    :param algorithm: the algorithm or algorithms a token may use; HS256 only with a secret.
    :param user_claim: the claim that carries the user id.
    """

    def __init__(
        self,
        key: str | KeySource,
        algorithm: str | Sequence[str],
        *,
        audience: str,
        issuer: str,
        user_claim: str = DEFAULT_JWT_USER_CLAIM,
        cache_size: int = DEFAULT_TOKEN_CACHE_SIZE,
        leeway: float = 0.0,
        timer: Callable[[], float] = time.time,
    ) -> None:
        algorithms = [algorithm] if isinstance(algorithm, str) else list(algorithm)
        symmetric = isinstance(key, str) and "PUBLIC KEY" not in key
        allowed = {"HS256"} if symmetric else ASYMMETRIC_ALGORITHMS
        if not algorithms or any(name not in allowed for name in algorithms):
            raise ValueError(f"unsupported algorithm(s) {algorithms!r} for this key")
        self._keys: KeySource = _StaticKey(key) if isinstance(key, str) else key
        self._algorithms = algorithms
        self._audience = audience
        self._issuer = issuer
        self._user_claim = user_claim
        self._leeway = leeway
        self._timer = timer
        # Verified tokens: Authorization header -> (user id, exp). Keyed by the header itself:
        # the process holds it for the request anyway. Read without the lock (one atomic
        # ``get``), written under it; at ``cache_size`` the token verified longest ago goes first.
        self._cache: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def user_id(self, authorization: str | None) -> int | None:
        """The verified user id of a ``Bearer`` header, or ``None`` for anything invalid.

        :raises InvalidIdentity: the token verifies but its user claim is not a user id.
        :raises IdentityUnavailable: the keys to verify it with cannot be fetched.
        """
        if not authorization:
            return None
        # The cache is keyed by the whole header: a request that sends the same header again
        # costs one dict read and one clock reading.
        hit = self._cache.get(authorization)
        if hit is not None:
            if self._timer() < hit[1] + self._leeway:
                return hit[0]
            with self._lock:
                self._cache.pop(authorization, None)
            return None
        if len(authorization) > MAX_TOKEN_LENGTH:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            claims = jwt.decode(
                token,
                self._keys.key_for(token),
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                # The user claim is checked below, so a signed but unusable subject is told apart.
                options={
                    "require": ["exp", "aud", "iss", self._user_claim],
                    "verify_sub": False,
                },
            )
        # Any PyJWT error (a bad token, or a key of the wrong type for its alg) is a 401.
        except jwt.PyJWTError as exc:
            log.info("rejected bearer token: %s", type(exc).__name__)
            return None
        try:
            user_id = subject_user_id(claims[self._user_claim], self._user_claim)
        except InvalidIdentity:
            log.info("rejected bearer token: its %s is not a user id", self._user_claim)
            raise
        with self._lock:
            self._cache[authorization] = (user_id, float(claims["exp"]))
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return user_id


def verifier_for(settings: Settings) -> JWTVerifier | None:
    """The verifier the settings describe, or ``None`` when no key is configured."""
    keys: str | KeySource | None = settings.jwt_secret or settings.jwt_public_key
    if settings.jwks_url:
        keys = JWKSKeys(
            settings.jwks_url,
            timeout=settings.jwks_timeout,
            lifespan=settings.jwks_lifespan,
            max_stale=settings.max_stale,
        )
    if keys is None:
        return None
    algorithms = settings.jwt_algorithms or (
        ("HS256",) if settings.jwt_secret else DEFAULT_ASYMMETRIC_ALGORITHMS
    )
    return JWTVerifier(
        keys,
        algorithms,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        user_claim=settings.jwt_user_claim,
        cache_size=settings.token_cache_size,
    )

"""Who is calling: the default identity loader verifies the IdP's JWT bearer tokens.

Verification pins the algorithm (HS256 with a shared secret or RS256 with a public key), and
requires ``exp``, ``sub``, ``aud`` and ``iss``. Verified tokens are kept in a bounded cache until
their ``exp``, so a hot token is not verified again on every request. Tokens are never logged.

The ``sub`` must be a user id as the IdP issues them: a JSON string of ASCII digits without a
leading zero, between 1 and 2**63-1 (the widest integer key the IdP's databases use). Anything
else (``"alice"``, ``"-1"``, ``"1.0"``, ``"0123"``, ``"٣"``, ``""``, a number, ``true``) comes from
a token that was signed but cannot name one of our users: it is refused as
:class:`InvalidIdentity` before any cache or IdP lookup, so such tokens cost no IdP call.
String ids stay possible through a custom ``identity_loader``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

import jwt
from cachetools import LRUCache

from .errors import InvalidIdentity

log = logging.getLogger(__name__)

#: Longest Authorization header considered at all; longer ones are refused unread.
MAX_TOKEN_LENGTH = 8192
#: Largest user id a token may name (a signed 64-bit key, as the cache keys allow).
MAX_SUBJECT_ID = 2**63 - 1
_SUBJECT_RE = re.compile(r"[1-9][0-9]{0,18}")


def subject_user_id(sub: object) -> int:
    """The user id a token's ``sub`` names; :class:`InvalidIdentity` unless it is canonical.

    Canonical means exactly what the IdP writes, ``str(user.id)``, so one user has one spelling
    and no normalisation (``"0123"``, ``" 1"``, ``"1.0"``) is ever guessed at.
    """
    if isinstance(sub, str) and _SUBJECT_RE.fullmatch(sub):
        user_id = int(sub)
        if user_id <= MAX_SUBJECT_ID:
            return user_id
    raise InvalidIdentity("the token's sub is not a user id")


class JWTVerifier:
    """Turns an ``Authorization: Bearer`` header value into a user id, or ``None``.

    :param key: the HS256 secret or the RS256 PEM public key.
    :param algorithm: ``"HS256"`` or ``"RS256"``; nothing else is accepted.
    """

    def __init__(
        self,
        key: str,
        algorithm: str,
        *,
        audience: str,
        issuer: str,
        cache_size: int = 10000,
        leeway: float = 0.0,
        timer: Callable[[], float] = time.time,
    ) -> None:
        if algorithm not in ("HS256", "RS256"):
            raise ValueError(f"unsupported algorithm {algorithm!r}")
        self._key = key
        self._algorithm = algorithm
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway
        self._timer = timer
        # Keyed by the token itself: the process holds it for the request anyway.
        self._cache: LRUCache[str, tuple[int, float]] = LRUCache(cache_size)
        self._lock = threading.Lock()

    def user_id(self, authorization: str | None) -> int | None:
        """The verified ``sub`` of a ``Bearer`` header, or ``None`` for anything invalid.

        :raises InvalidIdentity: the token verifies but its ``sub`` is not a user id.
        """
        if not authorization or len(authorization) > MAX_TOKEN_LENGTH:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        now = self._timer()
        with self._lock:
            hit = self._cache.get(token)
        if hit is not None:
            if now < hit[1] + self._leeway:
                return hit[0]
            with self._lock:
                self._cache.pop(token, None)
            return None
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                # ``sub`` is checked below, so a signed but unusable subject is told apart.
                options={"require": ["exp", "sub", "aud", "iss"], "verify_sub": False},
            )
        except jwt.InvalidTokenError as exc:
            log.info("rejected bearer token: %s", type(exc).__name__)
            return None
        try:
            user_id = subject_user_id(claims["sub"])
        except InvalidIdentity:
            log.info("rejected bearer token: its sub is not a user id")
            raise
        with self._lock:
            self._cache[token] = (user_id, float(claims["exp"]))
        return user_id

"""Who is calling: the default identity loader verifies the IdP's JWT bearer tokens.

Verification pins the algorithm (HS256 with a shared secret or RS256 with a public key), and
requires ``exp``, ``sub``, ``aud`` and ``iss``. Verified tokens are kept in a bounded cache until
their ``exp``, so a hot token is not verified again on every request. Tokens are never logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import jwt
from cachetools import LRUCache

from .codec import validate_user_id
from .errors import InvalidKeyPart

log = logging.getLogger(__name__)

#: Longest Authorization header considered at all; longer ones are refused unread.
MAX_TOKEN_LENGTH = 8192


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
        self._cache: LRUCache[str, tuple[int | str, float]] = LRUCache(cache_size)
        self._lock = threading.Lock()

    def user_id(self, authorization: str | None) -> int | str | None:
        """The verified ``sub`` of a ``Bearer`` header, or ``None`` for anything invalid."""
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
                options={"require": ["exp", "sub", "aud", "iss"]},
            )
            user_id = validate_user_id(claims["sub"])
        except (jwt.InvalidTokenError, InvalidKeyPart) as exc:
            log.info("rejected bearer token: %s", type(exc).__name__)
            return None
        with self._lock:
            self._cache[token] = (user_id, float(claims["exp"]))
        return user_id

"""Access tokens for users: JWTs the library's default identity loader accepts."""

from __future__ import annotations

import time

import jwt
from flask import current_app

from . import signing_keys
from .models import User


def issue(user: User, audience: str | None = None) -> tuple[str, int]:
    """A signed JWT for ``user`` and its lifetime in seconds.

    Claims: ``sub`` (the user id as a string, as RFC 7519 and PyJWT require), ``aud`` (the
    service the token is for; ``RBAC_ABAC_JWT_AUDIENCE`` when ``None``), ``iss``, ``iat``,
    ``exp``. Signed by :func:`signing_keys.current_signer`, whose ``kid`` goes in the header.
    """
    config = current_app.config
    signer = signing_keys.current_signer()
    lifetime = int(config["IDP_TOKEN_LIFETIME"])
    now = int(time.time())
    claims = {
        "sub": str(user.id),
        "aud": audience or config["RBAC_ABAC_JWT_AUDIENCE"],
        "iss": config["RBAC_ABAC_JWT_ISSUER"],
        "iat": now,
        "exp": now + lifetime,
    }
    headers = {"kid": signer.kid} if signer.kid else None
    return jwt.encode(claims, signer.key, algorithm=signer.algorithm, headers=headers), lifetime

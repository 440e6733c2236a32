"""Access tokens for users: JWTs the library's default identity loader accepts."""

from __future__ import annotations

import time

import jwt
from flask import current_app

from .errors import ApiError
from .models import User


def issue(user: User) -> tuple[str, int]:
    """A signed JWT for ``user`` and its lifetime in seconds.

    Claims: ``sub`` (the user id as a string, as RFC 7519 and PyJWT require), ``aud``, ``iss``,
    ``iat``, ``exp``. HS256 with ``RBAC_ABAC_JWT_SECRET`` or RS256 with
    ``RBAC_ABAC_JWT_PRIVATE_KEY``.
    """
    config = current_app.config
    if config["RBAC_ABAC_JWT_PRIVATE_KEY"]:
        key, algorithm = config["RBAC_ABAC_JWT_PRIVATE_KEY"], "RS256"
    elif config["RBAC_ABAC_JWT_SECRET"]:
        key, algorithm = config["RBAC_ABAC_JWT_SECRET"], "HS256"
    else:
        raise ApiError(
            503,
            "token issuing is not configured: set RBAC_ABAC_JWT_SECRET or "
            "RBAC_ABAC_JWT_PRIVATE_KEY",
        )
    lifetime = int(config["IDP_TOKEN_LIFETIME"])
    now = int(time.time())
    claims = {
        "sub": str(user.id),
        "aud": config["RBAC_ABAC_JWT_AUDIENCE"],
        "iss": config["RBAC_ABAC_JWT_ISSUER"],
        "iat": now,
        "exp": now + lifetime,
    }
    return jwt.encode(claims, key, algorithm=algorithm), lifetime

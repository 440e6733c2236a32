"""Access tokens for users: credentials checked, and JWTs the library's default loader accepts."""

from __future__ import annotations

import time

import jwt
from flask import current_app
from werkzeug.security import check_password_hash, generate_password_hash

from . import operations, signing_keys
from .domain_errors import InvalidCredentials
from .models import User

#: Longest username looked up at all (the longest one that can exist).
MAX_USERNAME_LENGTH = 64

_dummy_hashes: dict[str, str] = {}


def _dummy_hash() -> str:
    method = current_app.config["IDP_PASSWORD_HASH_METHOD"]
    if method not in _dummy_hashes:
        _dummy_hashes[method] = generate_password_hash("not-a-password", method=method)
    return _dummy_hashes[method]


def authenticate(username: str, password: str) -> User:
    """The active user with these credentials.

    :raises InvalidCredentials: unknown username, wrong password or a deactivated user. A
        password is hashed even for an unknown user, so timing does not tell which usernames
        exist.
    """
    user = operations.user_by_name(username) if len(username) <= MAX_USERNAME_LENGTH else None
    valid = check_password_hash(user.password_hash if user else _dummy_hash(), password)
    if user is None or not valid or not user.active:
        raise InvalidCredentials()
    return user


def issue(user: User, audience: str | None = None) -> tuple[str, int]:
    """A signed JWT for ``user`` and its lifetime in seconds.

    Claims: ``sub`` (the user id as a string, as RFC 7519 and PyJWT require), ``aud`` (the
    service the token is for; ``RBAC_ABAC_JWT_AUDIENCE`` when ``None``), ``iss``, ``iat``,
    ``exp``. Signed by :func:`signing_keys.current_signer`, whose ``kid`` goes in the header.

    :raises TokenIssuingNotConfigured: no signing key is configured or generated.
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

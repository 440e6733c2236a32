"""Bearer tokens: the admin token from the config and per-service tokens stored hashed."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from flask import current_app, request
from sqlalchemy import select

from . import audit
from .errors import ApiError
from .extensions import db
from .models import Service, ServiceToken

TOKEN_PREFIX = "svc_"  # noqa: S105 - a prefix, not a secret


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh service token and the hash to store (the token itself is never stored)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_token(token)


@dataclass(frozen=True)
class Caller:
    admin: bool
    service_name: str | None = None

    def authorize_service(self, service_name: str) -> None:
        """Admin may act for any service; a service only for itself (else 403)."""
        if not self.admin and service_name != self.service_name:
            raise ApiError(403, f"this token is not valid for service {service_name!r}")


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        return None
    return token


def _is_admin(token: str) -> bool:
    admin = current_app.config["IDP_ADMIN_TOKEN"]
    # Compare digests so the comparison is constant-time whatever the lengths.
    return admin is not None and hmac.compare_digest(hash_token(token), hash_token(admin))


def _service_for(token: str) -> str | None:
    digest = hash_token(token)
    row = db.session.execute(
        select(ServiceToken.token_hash, Service.name)
        .join(Service, Service.id == ServiceToken.service_id)
        .where(ServiceToken.token_hash == digest)
    ).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return str(row.name)


def authenticate() -> Caller:
    """The caller behind the ``Authorization`` header: admin or a service; else 401."""
    token = bearer_token()
    if token is not None:
        if _is_admin(token):
            audit.set_actor("admin-token")
            return Caller(admin=True)
        service = _service_for(token)
        if service is not None:
            audit.set_actor(f"service:{service}")
            return Caller(admin=False, service_name=service)
    raise ApiError(401, "missing or invalid bearer token")


def require_admin() -> Caller:
    caller = authenticate()
    if not caller.admin:
        raise ApiError(403, "this endpoint needs the admin token")
    return caller

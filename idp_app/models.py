"""The identity provider's tables: users, services, role assignments, tokens, versions, outbox."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from .extensions import db

#: Integer primary keys are 32-bit on PostgreSQL; larger ids can never exist.
MAX_DB_ID = 2**31 - 1


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(default=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=_now)
    #: When an admin change last touched the user (attributes, roles, active); NULL only on rows
    #: from before revision ``0003`` that nothing has changed since.
    updated_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, default=_now, onupdate=_now
    )
    #: Unix time the user last got a token or was refreshed, to within
    #: :data:`idp_app.activity.GRANULARITY` (so recording it is not a write per request); NULL:
    #: never seen. Cache warming selects by it (``active_since``).
    last_seen_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)


class Service(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "services"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    #: role -> sorted list of permissions
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: sorted attribute names the service sees; NULL: all of them
    attributes: Mapped[list[str] | None] = mapped_column(
        JSON(none_as_null=True), nullable=True, default=None
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=_now)


class ServiceToken(db.Model):  # type: ignore[name-defined,misc]
    """A service's bearer token; only its SHA-256 hex digest is stored."""

    __tablename__ = "service_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=_now)


class RoleAssignment(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "role_assignments"
    __table_args__ = (UniqueConstraint("user_id", "service_id", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(128))


class UserServiceVersion(db.Model):  # type: ignore[name-defined,misc]
    """Increases on every change that affects what one user may do in one service."""

    __tablename__ = "user_service_versions"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    service_id: Mapped[int] = mapped_column(
        ForeignKey("services.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class OutboxEntry(db.Model):  # type: ignore[name-defined,misc]
    """A committed change that Redis and the services have not yet been told about.

    Written in the same transaction as the change and deleted once delivered (see
    :mod:`idp_app.outbox`), so a change is never lost between the commit and Redis.
    """

    __tablename__ = "sync_outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(index=True)
    #: ``None``: every service of the user (an attribute change, a deactivation).
    service_name: Mapped[str | None] = mapped_column(String(64))
    #: The version the change produced, for the record (delivery reads the current one).
    version: Mapped[int | None] = mapped_column(BigInteger)
    #: Unix time of the change, so health can report the age of the oldest undelivered one.
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    #: The fields the change touched, per service, when it touched only some (see
    #: :class:`idp_app.operations.ServicePatch`): delivery patches them in place instead of
    #: rebuilding the value. ``None``: rebuild every field from the database.
    patch: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)


class SigningKey(db.Model):  # type: ignore[name-defined,misc]
    """A key the IdP signs access tokens with; the newest one not retired signs.

    A retired key stays published in the JWKS until ``expires_at`` (its last token's expiry plus
    leeway), then it is dropped. The private key is stored as unencrypted PEM: the database is
    as sensitive as ``RBAC_ABAC_JWT_PRIVATE_KEY`` would be.
    """

    __tablename__ = "signing_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    kid: Mapped[str] = mapped_column(String(64), unique=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    private_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    retired_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditEntry(db.Model):  # type: ignore[name-defined,misc]
    """One admin change: who made it, what it was, and the state before and after.

    Written in the same transaction as the change (see :mod:`idp_app.audit`). ``before`` and
    ``after`` never hold a secret: no password hash, no token. ``user_id`` has no foreign key,
    so the record outlives the user.
    """

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    #: ``admin-token``, ``service:<name>``, ``console:<username>`` or ``cli``.
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(nullable=True, index=True)
    target: Mapped[str] = mapped_column(String(256))
    before: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    after: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)


class ConsoleAdmin(db.Model):  # type: ignore[name-defined,misc]
    """A person who may sign in to the admin console (``flask --app idp_app create-admin``).

    Kept apart from :class:`User`: users are what services authorize, admins are who runs the
    IdP; neither can turn into the other.
    """

    __tablename__ = "console_admins"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(default=_now)
    #: Unix time of the last sign-out: sessions signed in before it are refused, so a copied
    #: session cookie stops working when its admin signs out (the cookie itself is stateless).
    signed_out_at: Mapped[float | None] = mapped_column(Float, nullable=True)

"""Stand-ins for the admin-API operations and audit log until they are merged; then deleted.

Same names and signatures as the functions the admin API adds to :mod:`idp_app.operations` and
:mod:`idp_app.audit`; :mod:`idp_app.console.ops` prefers those when they exist. The audit
stand-in only logs (the audit table comes with the real module).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select

from .. import auth
from ..domain_errors import OperationError, UserNotFound
from ..extensions import db
from ..models import RoleAssignment, Service, ServiceToken, User
from ..operations import (
    Sync,
    all_services,
    bump_version,
    get_service,
    lock_user,
    roles_of,
    set_roles,
    version_of,
)

logger = logging.getLogger("idp_app.audit")


class TokenNotFound(OperationError):
    """No token of that id belongs to the service."""

    def __init__(self, service_name: str, token_id: int) -> None:
        super().__init__(f"service {service_name!r} has no token {token_id}")


def list_users(
    q: str | None, active: bool | None, service: str | None, limit: int, cursor: str | None
) -> tuple[list[User], str | None]:
    """Users by id, after ``cursor`` (the last id of the previous page)."""
    query = select(User).order_by(User.id)
    if q:
        match = User.username.ilike(f"%{q}%")
        query = query.where(or_(match, User.id == int(q)) if q.isdigit() else match)
    if active is not None:
        query = query.where(User.active.is_(active))
    if service:
        svc = get_service(service)
        held = select(RoleAssignment.user_id).where(RoleAssignment.service_id == svc.id)
        query = query.where(User.id.in_(held))
    if cursor:
        query = query.where(User.id > int(cursor))
    rows = list(db.session.execute(query.limit(limit + 1)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (str(rows[-1].id) if more and rows else None)


def user_detail(user_id: int) -> dict[str, Any]:
    user = db.session.get(User, user_id) if user_id > 0 else None
    if user is None:
        raise UserNotFound(user_id)
    services = {
        s.name: {"roles": roles_of(user.id, s), "version": version_of(user.id, s)}
        for s in all_services()
    }
    return {
        "id": user.id,
        "username": user.username,
        "active": user.active,
        "attributes": dict(user.attributes or {}),
        "services": services,
        "created_at": user.created_at,
        "updated_at": None,
    }


def activate_user(user_id: int) -> Sync:
    user = lock_user(user_id)
    if user is None:
        raise UserNotFound(user_id)
    user.active = True
    for service in all_services():
        bump_version(user.id, service)
    sync = Sync()
    sync.add(user.id, None, None)
    return sync


def remove_roles(user_id: int, service_name: str) -> Sync:
    return set_roles(user_id, service_name, [])[1]


def list_services() -> list[Service]:
    return all_services()


def service_detail(name: str) -> dict[str, Any]:
    service = get_service(name)
    tokens = db.session.execute(
        select(ServiceToken).where(ServiceToken.service_id == service.id).order_by(ServiceToken.id)
    ).scalars()
    return {
        "name": service.name,
        "roles": service.manifest,
        "attributes": service.attributes,
        "created_at": service.created_at,
        "tokens": [{"id": t.id, "created_at": t.created_at} for t in tokens],
    }


def issue_service_token(service_name: str) -> tuple[int, str]:
    service = get_service(service_name)
    token, digest = auth.new_token()
    row = ServiceToken(service_id=service.id, token_hash=digest)
    db.session.add(row)
    db.session.flush()
    return row.id, token


def revoke_service_token(service_name: str, token_id: int) -> None:
    service = get_service(service_name)
    result = db.session.execute(
        delete(ServiceToken).where(
            ServiceToken.id == token_id, ServiceToken.service_id == service.id
        )
    )
    if getattr(result, "rowcount", 0) == 0:
        raise TokenNotFound(service_name, token_id)


@dataclass(frozen=True)
class AuditEntry:
    id: int
    actor: str
    action: str
    user_id: int | None
    target: str | None
    before: Any
    after: Any
    created_at: dt.datetime


class audit:
    """``idp_app.audit``'s two functions; entries are only logged here."""

    @staticmethod
    def record(
        actor: str, action: str, user_id: int | None, target: str | None, before: Any, after: Any
    ) -> None:
        logger.info("audit %s %s user=%s target=%s", actor, action, user_id, target)

    @staticmethod
    def list_entries(
        user_id: int | None, limit: int, cursor: str | None
    ) -> tuple[list[AuditEntry], str | None]:
        return [], None

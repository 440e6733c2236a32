"""What the API and the CLI do to the database, and the Redis sync each change needs.

Every change bumps the affected ``(user, service)`` versions and adds outbox rows in the same
transaction; it returns them as a :class:`Sync` that the caller delivers *after* committing
(:func:`idp_app.outbox.deliver`), and that the outbox delivers anyway if that fails. Readers and
writers of one user lock the user's row (``SELECT ... FOR UPDATE`` on PostgreSQL), and a refresh
writes Redis while it holds that lock, so a refresh that read the database before a change can
never land in Redis after it.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.security import generate_password_hash

from flask_rbac_abac.shared import UserAttributes

from . import audit, auth
from .domain_errors import (
    AlreadyExists,
    ServiceNotRegistered,
    TokenNotFound,
    UnknownRoles,
    UserNotFound,
)
from .extensions import db
from .models import (
    MAX_DB_ID,
    OutboxEntry,
    RoleAssignment,
    Service,
    ServiceToken,
    User,
    UserServiceVersion,
)

#: The parts of a value a change or a refresh can name (``"fields"`` of the refresh endpoint).
FIELDS = ("attributes", "roles")


@dataclass(frozen=True)
class ServicePatch:
    """The fields one change touched in one service's value: what its delivery patches in place.

    :param version: the version the change gave the value; the patch applies only to the entry
        holding ``version - 1`` (:func:`flask_rbac_abac.shared.patch_attributes`).
    :param roles: the new roles (and ``permissions``), or ``None`` when they did not change.
    :param attributes: every visible attribute, replacing the stored ones, or ``None``.
    :param set: visible attributes the change set, and ``remove`` those it removed.
    """

    version: int
    roles: list[str] | None = None
    permissions: list[str] | None = None
    attributes: dict[str, Any] | None = None
    set: dict[str, Any] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "roles": self.roles,
            "permissions": self.permissions,
            "attributes": self.attributes,
            "set": self.set,
            "remove": self.remove,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServicePatch:
        return cls(
            version=int(data["version"]),
            roles=data.get("roles"),
            permissions=data.get("permissions"),
            attributes=data.get("attributes"),
            set=dict(data.get("set") or {}),
            remove=list(data.get("remove") or []),
        )


#: An outbox row's patch: per service, the fields that changed, or ``None`` where the user's value
#: must be deleted (no role left there).
Patch = dict[str, ServicePatch | None]


@dataclass
class Sync:
    """The outbox rows one change added: what Redis must learn once the change is committed."""

    entry_ids: list[int] = field(default_factory=list)

    def add(
        self,
        user_id: int,
        service_name: str | None,
        version: int | None,
        patch: Patch | None = None,
    ) -> None:
        """Record that ``user_id`` changed in ``service_name`` (``None``: in every service).

        :param patch: the fields that changed, when the change touched only some: delivery then
            patches the cached values in place instead of rebuilding them from the database.
        """
        entry = OutboxEntry(
            user_id=user_id,
            service_name=service_name,
            version=version,
            patch=None
            if patch is None
            else {name: None if p is None else p.to_json() for name, p in patch.items()},
        )
        db.session.add(entry)
        db.session.flush()
        self.entry_ids.append(entry.id)


def get_service(name: str) -> Service:
    service = db.session.execute(select(Service).where(Service.name == name)).scalar_one_or_none()
    if service is None:
        raise ServiceNotRegistered(name)
    return service


def all_services() -> list[Service]:
    return list(db.session.execute(select(Service).order_by(Service.name)).scalars())


def lock_user(user_id: int) -> User | None:
    """The user's row, locked until commit (a no-op on SQLite, which serialises writers)."""
    if not 1 <= user_id <= MAX_DB_ID:
        return None
    return db.session.get(User, user_id, with_for_update=True, populate_existing=True)


def active_user(user_id: int) -> User:
    user = lock_user(user_id)
    if user is None or not user.active:
        raise UserNotFound(user_id)
    return user


def user_by_name(username: str) -> User | None:
    return db.session.execute(select(User).where(User.username == username)).scalar_one_or_none()


def roles_of(user_id: int, service: Service) -> list[str]:
    rows = db.session.execute(
        select(RoleAssignment.role).where(
            RoleAssignment.user_id == user_id, RoleAssignment.service_id == service.id
        )
    ).scalars()
    return sorted(r for r in rows if r in service.manifest)


def held_roles(user_id: int) -> dict[int, list[str]]:
    """The user's roles in every service, by service id, in one query (manifest not applied)."""
    held: dict[int, list[str]] = {}
    rows = db.session.execute(
        select(RoleAssignment.service_id, RoleAssignment.role).where(
            RoleAssignment.user_id == user_id
        )
    )
    for service_id, role in rows:
        held.setdefault(service_id, []).append(role)
    return held


def version_of(user_id: int, service: Service) -> int:
    version = db.session.execute(
        select(UserServiceVersion.version).where(
            UserServiceVersion.user_id == user_id, UserServiceVersion.service_id == service.id
        )
    ).scalar_one_or_none()
    return int(version or 0)


def bump_version(user_id: int, service: Service) -> int:
    """Increase the ``(user, service)`` version; the caller holds the user's row lock."""
    result = db.session.execute(
        update(UserServiceVersion)
        .where(UserServiceVersion.user_id == user_id, UserServiceVersion.service_id == service.id)
        .values(version=UserServiceVersion.version + 1)
    )
    if getattr(result, "rowcount", 0) == 0:
        db.session.add(UserServiceVersion(user_id=user_id, service_id=service.id, version=1))
        db.session.flush()
    return version_of(user_id, service)


def build_attributes(user: User, service: Service, version: int | None = None) -> UserAttributes:
    """What ``user`` may do in ``service``, straight from the database.

    Only the attributes the service's registration lists are included (all of them when it
    lists none): a service sees what it declared it needs, not every other service's data.
    """
    version = version_of(user.id, service) if version is None else version
    return value_from_rows(user.id, user.attributes, service, roles_of(user.id, service), version)


def value_from_rows(
    user_id: int,
    user_attributes: Mapping[str, Any] | None,
    service: Service,
    roles: Iterable[str],
    version: int,
) -> UserAttributes:
    """:func:`build_attributes` from columns already read (cache warming reads them in bulk).

    Roles not in the service's manifest are dropped, as :func:`roles_of` drops them.
    """
    held = sorted(r for r in set(roles) if r in service.manifest)
    permissions = {p for role in held for p in service.manifest.get(role, ())}
    attributes = dict(user_attributes or {})
    if service.attributes is not None:
        visible = set(service.attributes)
        attributes = {k: v for k, v in attributes.items() if k in visible}
    return UserAttributes(
        user_id=user_id,
        service_name=service.name,
        roles=tuple(held),
        permissions=tuple(permissions),
        attributes=attributes,
        version=version,
        fetched_at=time.time(),
    )


def value_for_service(
    user: User | None, service: Service, version: int | None = None
) -> UserAttributes | None:
    """The user's value in ``service``, or ``None`` when the service must not know the user.

    A user is known to a service only while active and holding at least one role there; anyone
    else is unknown to it (404 ``user_not_found`` at the refresh endpoint, no Redis entry), so a
    service token cannot read the attributes of people who have nothing to do with it.
    """
    if user is None or not user.active:
        return None
    attrs = build_attributes(user, service, version)
    return attrs if attrs.roles else None


def _new_token(service: Service) -> tuple[int, str]:
    """Store a new token's hash for ``service``; its id and the token (never stored)."""
    token, digest = auth.new_token()
    row = ServiceToken(service_id=service.id, token_hash=digest)
    db.session.add(row)
    db.session.flush()
    return row.id, token


def issue_service_token(service_name: str) -> tuple[int, str]:
    """A new token for the service, its others kept: rotation without downtime.

    The caller shows the token once; only its hash is stored. Revoke the old one with
    :func:`revoke_service_token` once every instance of the service uses the new one.
    """
    service = get_service(service_name)
    token_id, token = _new_token(service)
    audit.note(
        "issue_service_token",
        None,
        f"service:{service.name}",
        None,
        {"token_id": token_id},
    )
    return token_id, token


def revoke_service_token(service_name: str, token_id: int) -> None:
    """Delete one of the service's tokens; requests with it are 401 from the commit on."""
    service = get_service(service_name)
    row = db.session.get(ServiceToken, token_id) if 1 <= token_id <= MAX_DB_ID else None
    if row is None or row.service_id != service.id:
        raise TokenNotFound(service.name, token_id)
    db.session.delete(row)
    db.session.flush()
    audit.note(
        "revoke_service_token",
        None,
        f"service:{service.name}",
        {"token_id": token_id},
        None,
    )


@dataclass
class ServiceResult:
    service: Service
    created: bool
    token: str | None
    sync: Sync


class Unchanged(enum.Enum):
    """Marks an optional registration field the caller left out: keep the stored value."""

    UNCHANGED = "unchanged"


UNCHANGED = Unchanged.UNCHANGED


def register_service(
    name: str,
    manifest: Mapping[str, list[str]],
    attributes: Sequence[str] | Unchanged | None = UNCHANGED,
) -> ServiceResult:
    """Create ``name`` with a new token, or replace its manifest.

    :param attributes: the attribute names the service sees; ``None`` for all of them;
        :data:`UNCHANGED` keeps what is stored (all, for a new service), so re-registering the
        roles never widens what a service sees by omission.

    A changed manifest or attribute list changes the values of everyone holding a role there:
    their versions are bumped and their cached values rewritten (or deleted when no role is left).
    Assignments of removed roles are dropped.
    """
    manifest = {role: sorted(set(perms)) for role, perms in manifest.items()}
    visible = None if attributes is None or attributes is UNCHANGED else sorted(set(attributes))
    service = db.session.execute(select(Service).where(Service.name == name)).scalar_one_or_none()
    if service is None:
        service = Service(name=name, manifest=manifest, attributes=visible)
        db.session.add(service)
        try:
            db.session.flush()
        except IntegrityError:
            db.session.rollback()
            raise AlreadyExists("service", name) from None
        _, token = _new_token(service)
        audit.note(
            "register_service",
            None,
            f"service:{name}",
            None,
            {"roles": manifest, "attributes": visible},
        )
        return ServiceResult(service, True, token, Sync())

    sync = Sync()
    if attributes is UNCHANGED:
        visible = service.attributes
    if service.manifest != manifest or service.attributes != visible:
        user_ids = sorted(
            set(
                db.session.execute(
                    select(RoleAssignment.user_id).where(RoleAssignment.service_id == service.id)
                ).scalars()
            )
        )
        audit.note(
            "register_service",
            None,
            f"service:{name}",
            {"roles": service.manifest, "attributes": service.attributes},
            {"roles": manifest, "attributes": visible},
        )
        service.manifest = manifest
        service.attributes = visible
        db.session.execute(
            delete(RoleAssignment).where(
                RoleAssignment.service_id == service.id,
                RoleAssignment.role.not_in(list(manifest)),
            )
        )
        for user_id in user_ids:
            user = lock_user(user_id)
            if user is None:
                continue
            version = bump_version(user_id, service)
            if user.active:
                sync.add(user_id, service.name, version)
    return ServiceResult(service, False, None, sync)


def create_user(username: str, password: str, attributes: Mapping[str, Any]) -> User:
    if user_by_name(username) is not None:
        raise AlreadyExists("user", username)
    user = User(
        username=username,
        password_hash=generate_password_hash(
            password, method=current_app.config["IDP_PASSWORD_HASH_METHOD"]
        ),
        active=True,
        attributes=dict(attributes),
    )
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise AlreadyExists("user", username) from None
    audit.note(
        "create_user",
        user.id,
        f"user:{user.id}",
        None,
        {"username": user.username, "active": True, "attributes": user.attributes},
    )
    return user


def set_roles(user_id: int, service_name: str, roles: Iterable[str]) -> tuple[UserAttributes, Sync]:
    """Replace the user's roles in one service; unknown roles are refused, naming them."""
    service = get_service(service_name)
    roles = sorted(set(roles))
    unknown = [r for r in roles if r not in service.manifest]
    if unknown:
        raise UnknownRoles(service_name, unknown)
    user = active_user(user_id)
    before = roles_of(user.id, service)
    db.session.execute(
        delete(RoleAssignment).where(
            RoleAssignment.user_id == user.id, RoleAssignment.service_id == service.id
        )
    )
    _record_roles("set_roles", user, service, before, roles)
    for role in roles:
        db.session.add(RoleAssignment(user_id=user.id, service_id=service.id, role=role))
    db.session.flush()
    version = bump_version(user.id, service)
    attrs = build_attributes(user, service, version)
    change = (
        ServicePatch(version, roles=list(attrs.roles), permissions=list(attrs.permissions))
        if attrs.roles
        else None
    )
    sync = Sync()
    sync.add(user.id, service.name, version, {service.name: change})
    return attrs, sync


def update_attributes(
    user_id: int, changes: Mapping[str, Any]
) -> tuple[User, dict[str, int], Sync]:
    """Merge ``changes`` into the user's attributes (``null`` removes a key).

    The attributes are part of the user's value in every service, so every service's version is
    bumped; the outbox row carries, per service where the user holds a role, the change to the
    attributes that service sees, so delivery patches the cached values in place
    (:class:`ServicePatch`); services where the user holds no role get a deletion.
    """
    from .validation import check_attributes_size

    user = active_user(user_id)
    merged = dict(user.attributes or {})
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    check_attributes_size(merged)
    audit.note(
        "update_attributes",
        user.id,
        f"user:{user.id}",
        {"attributes": user.attributes},
        {"attributes": merged},
    )
    user.attributes = merged
    db.session.flush()
    services = all_services()
    versions = {service.name: bump_version(user.id, service) for service in services}
    held = held_roles(user.id)
    patch: Patch = {}
    for service in services:
        if not any(role in service.manifest for role in held.get(service.id, ())):
            patch[service.name] = None
            continue
        visible = set(changes) if service.attributes is None else set(service.attributes)
        patch[service.name] = ServicePatch(
            versions[service.name],
            set={k: v for k, v in changes.items() if k in visible and v is not None},
            remove=sorted(k for k, v in changes.items() if k in visible and v is None),
        )
    sync = Sync()
    sync.add(user.id, None, None, patch)
    return user, versions, sync


def deactivate_user(user_id: int) -> Sync:
    """Deactivate; every cached value of the user is deleted and announced."""
    user = active_user(user_id)
    user.active = False
    _record_active("deactivate_user", user)
    for service in all_services():
        bump_version(user.id, service)
    sync = Sync()
    sync.add(user.id, None, None)
    return sync


def _record_roles(
    action: str, user: User, service: Service, before: list[str], after: list[str]
) -> None:
    user.updated_at = _utcnow()  # roles live in another table: the row is not otherwise updated
    audit.note(
        action,
        user.id,
        f"user:{user.id}/service:{service.name}",
        {"roles": before},
        {"roles": sorted(after)},
    )


def _record_active(action: str, user: User) -> None:
    audit.note(
        action,
        user.id,
        f"user:{user.id}",
        {"active": not user.active},
        {"active": user.active},
    )


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def activate_user(user_id: int) -> Sync:
    """Activate a deactivated user (a no-op for an active one); their values are cached again
    on the next refresh, announced now so no service keeps "unknown" for them.
    """
    user = lock_user(user_id)
    if user is None:
        raise UserNotFound(user_id)
    sync = Sync()
    if user.active:
        return sync
    user.active = True
    _record_active("activate_user", user)
    for service in all_services():
        bump_version(user.id, service)
    sync.add(user.id, None, None)
    return sync


def remove_roles(user_id: int, service_name: str) -> Sync:
    """Take every role of the user in one service (active or not); its cached value goes."""
    service = get_service(service_name)
    user = lock_user(user_id)
    if user is None:
        raise UserNotFound(user_id)
    before = roles_of(user.id, service)
    db.session.execute(
        delete(RoleAssignment).where(
            RoleAssignment.user_id == user.id, RoleAssignment.service_id == service.id
        )
    )
    _record_roles("remove_roles", user, service, before, [])
    version = bump_version(user.id, service)
    sync = Sync()
    sync.add(user.id, service.name, version)
    return sync


def list_users(
    q: str | None, active: bool | None, service: str | None, limit: int, cursor: str | None
) -> tuple[list[User], str | None]:
    """One page of users in id order, and the cursor of the next (``None``: the last page).

    :param q: a case-insensitive substring of the username.
    :param service: only users holding a role in this service.
    Pages follow the id, so users created while paging never shift or repeat a row.
    """
    query = select(User).order_by(User.id).limit(limit + 1)
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(User.username.ilike(f"%{escaped}%", escape="\\"))
    if active is not None:
        query = query.where(User.active.is_(active))
    if service is not None:
        svc = get_service(service)
        query = query.where(
            select(RoleAssignment.id)
            .where(RoleAssignment.user_id == User.id, RoleAssignment.service_id == svc.id)
            .exists()
        )
    if cursor is not None:
        query = query.where(User.id > audit.decode_cursor(cursor))
    users = list(db.session.execute(query).scalars())
    more = len(users) > limit
    users = users[:limit]
    return users, audit.encode_cursor(users[-1].id) if more and users else None


def user_summary(user: User) -> dict[str, Any]:
    """A user as listings show it (never the password hash)."""
    return {
        "id": user.id,
        "username": user.username,
        "active": user.active,
        "attributes": user.attributes or {},
        "created_at": audit.iso(user.created_at),
        "updated_at": audit.iso(user.updated_at or user.created_at),
    }


def user_detail(user_id: int) -> dict[str, Any]:
    """The user, with roles and version in every service where they hold a role or had one."""
    user = db.session.get(User, user_id) if 1 <= user_id <= MAX_DB_ID else None
    if user is None:
        raise UserNotFound(user_id)
    services = {}
    for service in all_services():
        roles = roles_of(user.id, service)
        version = version_of(user.id, service)
        if roles or version:
            services[service.name] = {"roles": roles, "version": version}
    return {**user_summary(user), "services": services}


def list_services() -> list[Service]:
    """Every registered service, by name."""
    return all_services()


def service_summary(service: Service) -> dict[str, Any]:
    return {
        "name": service.name,
        "roles": service.manifest,
        "attributes": service.attributes,
        "created_at": audit.iso(service.created_at),
    }


def service_detail(name: str) -> dict[str, Any]:
    """The service's manifest, visible attributes and tokens (id and creation time only)."""
    service = get_service(name)
    tokens = db.session.execute(
        select(ServiceToken).where(ServiceToken.service_id == service.id).order_by(ServiceToken.id)
    ).scalars()
    return {
        **service_summary(service),
        "tokens": [{"id": t.id, "created_at": audit.iso(t.created_at)} for t in tokens],
    }

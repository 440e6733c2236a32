"""What the API and the CLI do to the database, and the Redis sync each change needs.

Every change bumps the affected ``(user, service)`` versions and adds outbox rows in the same
transaction; it returns them as a :class:`Sync` that the caller delivers *after* committing
(:func:`idp_app.outbox.deliver`), and that the outbox delivers anyway if that fails. Readers and
writers of one user lock the user's row (``SELECT ... FOR UPDATE`` on PostgreSQL), and a refresh
writes Redis while it holds that lock, so a refresh that read the database before a change can
never land in Redis after it.
"""

from __future__ import annotations

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

from . import auth
from .domain_errors import AlreadyExists, ServiceNotRegistered, UnknownRoles, UserNotFound
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


def issue_service_token(service: Service) -> str:
    token, digest = auth.new_token()
    db.session.add(ServiceToken(service_id=service.id, token_hash=digest))
    return token


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
        token = issue_service_token(service)
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
    return user


def set_roles(user_id: int, service_name: str, roles: Iterable[str]) -> tuple[UserAttributes, Sync]:
    """Replace the user's roles in one service; unknown roles are refused, naming them."""
    service = get_service(service_name)
    roles = sorted(set(roles))
    unknown = [r for r in roles if r not in service.manifest]
    if unknown:
        raise UnknownRoles(service_name, unknown)
    user = active_user(user_id)
    db.session.execute(
        delete(RoleAssignment).where(
            RoleAssignment.user_id == user.id, RoleAssignment.service_id == service.id
        )
    )
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
    for service in all_services():
        bump_version(user.id, service)
    sync = Sync()
    sync.add(user.id, None, None)
    return sync

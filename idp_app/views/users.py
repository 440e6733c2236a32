"""Users: create, set roles per service, update attributes, deactivate (admin only)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from .. import auth, operations, outbox, validation
from ..errors import ApiError
from ..extensions import db

bp = Blueprint("users", __name__)


@bp.post("/")
def create_user() -> Any:
    auth.require_admin()
    data = validation.json_object()
    validation.only_keys(data, {"username", "password", "attributes"}, {"username", "password"})
    username = validation.username(data["username"])
    password = validation.password(data["password"])
    attributes = validation.attributes(data.get("attributes", {}))
    user = operations.create_user(username, password, attributes)
    db.session.commit()
    return {
        "success": True,
        "id": user.id,
        "username": user.username,
        "active": user.active,
        "attributes": user.attributes,
    }, 201


def _path_service(service_name: str) -> str:
    return validation.service_name(service_name)


@bp.put("/<user_id:user_id>/roles/<service_name>")
def set_roles(user_id: int, service_name: str) -> Any:
    """Replace the roles; the cached value is rewritten and invalidated at once."""
    auth.require_admin()
    service_name = _path_service(service_name)
    data = validation.json_object()
    validation.only_keys(data, {"roles"}, {"roles"})
    roles = validation.names(data["roles"], "roles")
    attrs, sync = operations.set_roles(user_id, service_name, roles)
    db.session.commit()
    cached = outbox.deliver(sync)
    return {
        "success": True,
        "user_id": user_id,
        "service_name": service_name,
        "roles": list(attrs.roles),
        "permissions": list(attrs.permissions),
        "version": attrs.version,
        "cached": cached,
    }


@bp.patch("/<user_id:user_id>/attributes")
def update_attributes(user_id: int) -> Any:
    """Merge attributes (``null`` removes one); every cached value of the user is rewritten."""
    auth.require_admin()
    changes = validation.attributes(validation.json_object())
    if not changes:
        raise ApiError(400, "no attributes given")
    user, versions, sync = operations.update_attributes(user_id, changes)
    db.session.commit()
    cached = outbox.deliver(sync)
    return {
        "success": True,
        "user_id": user.id,
        "attributes": user.attributes,
        "versions": versions,
        "cached": cached,
    }


@bp.delete("/<user_id:user_id>")
def deactivate_user(user_id: int) -> Any:
    """Deactivate; cached values are deleted and invalidated, later refreshes answer 404."""
    auth.require_admin()
    sync = operations.deactivate_user(user_id)
    db.session.commit()
    cached = outbox.deliver(sync)
    return {"success": True, "user_id": user_id, "active": False, "cached": cached}

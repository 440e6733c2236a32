"""Users: list, show, create, set or remove roles per service, update attributes, deactivate and
activate (admin only)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from .. import auth, operations, outbox, validation
from ..errors import ApiError
from ..extensions import db

bp = Blueprint("users", __name__)


@bp.get("/")
def list_users() -> Any:
    """One page of users in id order; ``next_cursor`` fetches the next (``null``: the last)."""
    auth.require_admin()
    args = validation.query_args({"q", "active", "service", "limit", "cursor"})
    service = args.get("service")
    users, next_cursor = operations.list_users(
        validation.search_text(args.get("q"), "q"),
        validation.flag(args.get("active"), "active"),
        None if service is None else validation.service_name(service),
        validation.page_limit(args.get("limit")),
        validation.cursor(args.get("cursor")),
    )
    return {
        "success": True,
        "users": [operations.user_summary(user) for user in users],
        "next_cursor": next_cursor,
    }


# One rule per path with every method: Werkzeug answers 405 (not 404) to a path whose
# converter refused the value when another rule of the same path has another method.
@bp.route("/<user_id:user_id>", methods=["GET", "DELETE"])
def user(user_id: int) -> Any:
    if request.method == "DELETE":
        return deactivate_user(user_id)
    auth.require_admin()
    return {"success": True, **operations.user_detail(user_id)}


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


@bp.route("/<user_id:user_id>/roles/<service_name>", methods=["PUT", "DELETE"])
def roles(user_id: int, service_name: str) -> Any:
    if request.method == "DELETE":
        return remove_roles(user_id, service_name)
    return set_roles(user_id, service_name)


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


def deactivate_user(user_id: int) -> Any:
    """Deactivate; cached values are deleted and invalidated, later refreshes answer 404."""
    auth.require_admin()
    sync = operations.deactivate_user(user_id)
    db.session.commit()
    cached = outbox.deliver(sync)
    return {"success": True, "user_id": user_id, "active": False, "cached": cached}


@bp.post("/<user_id:user_id>/deactivate")
def deactivate(user_id: int) -> Any:
    """The same as ``DELETE /api/users/<id>``."""
    return deactivate_user(user_id)


@bp.post("/<user_id:user_id>/activate")
def activate(user_id: int) -> Any:
    """Activate a deactivated user (an active one stays as it is)."""
    auth.require_admin()
    sync = operations.activate_user(user_id)
    db.session.commit()
    cached = outbox.deliver(sync)
    return {"success": True, "user_id": user_id, "active": True, "cached": cached}


def remove_roles(user_id: int, service_name: str) -> Any:
    """Take every role of the user in the service; the cached value is deleted."""
    auth.require_admin()
    service_name = _path_service(service_name)
    sync = operations.remove_roles(user_id, service_name)
    db.session.commit()
    cached = outbox.deliver(sync)
    return {
        "success": True,
        "user_id": user_id,
        "service_name": service_name,
        "roles": [],
        "cached": cached,
    }

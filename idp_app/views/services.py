"""Services: register or replace a manifest, list, show, issue and revoke tokens (admin only)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from .. import auth, operations, outbox, validation
from ..extensions import db

bp = Blueprint("services", __name__)


@bp.post("/")
def register_service() -> Any:
    """``201`` with the service token on first registration (the only time it is shown).

    ``attributes`` (optional) lists the attribute names the service sees; ``null`` means all;
    left out, the stored list is kept (all, for a new service).
    """
    auth.require_admin()
    data = validation.json_object()
    validation.only_keys(data, {"name", "roles", "attributes"}, {"name", "roles"})
    name = validation.service_name(data["name"])
    manifest = validation.manifest(data["roles"])
    visible = (
        validation.visible_attributes(data["attributes"])
        if "attributes" in data
        else operations.UNCHANGED
    )
    result = operations.register_service(name, manifest, visible)
    db.session.commit()
    cached = outbox.deliver(result.sync)
    body: dict[str, Any] = {
        "success": True,
        "name": result.service.name,
        "roles": result.service.manifest,
        "attributes": result.service.attributes,
    }
    if result.created:
        body["token"] = result.token
        return body, 201
    body["cached"] = cached
    return body


@bp.get("/")
def list_services() -> Any:
    auth.require_admin()
    return {
        "success": True,
        "services": [operations.service_summary(s) for s in operations.list_services()],
    }


@bp.get("/<service_name>")
def show_service(service_name: str) -> Any:
    """The manifest, visible attributes and the tokens' ids (never a token)."""
    auth.require_admin()
    return {"success": True, **operations.service_detail(validation.service_name(service_name))}


@bp.post("/<service_name>/tokens")
def issue_token(service_name: str) -> Any:
    """A new token, shown only this once; the service's other tokens keep working."""
    auth.require_admin()
    name = validation.service_name(service_name)
    token_id, token = operations.issue_service_token(name)
    db.session.commit()
    return {"success": True, "service_name": name, "token_id": token_id, "token": token}, 201


@bp.delete("/<service_name>/tokens/<int:token_id>")
def revoke_token(service_name: str, token_id: int) -> Any:
    """Revoke one token; requests with it are 401 from now on."""
    auth.require_admin()
    name = validation.service_name(service_name)
    operations.revoke_service_token(name, token_id)
    db.session.commit()
    return {"success": True, "service_name": name, "token_id": token_id}

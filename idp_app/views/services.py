"""``POST /api/services/``: register a service or replace its manifest."""

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

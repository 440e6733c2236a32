"""``POST /api/services/``: register a service or replace its manifest."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from .. import auth, operations, outbox, validation
from ..extensions import db

bp = Blueprint("services", __name__)


@bp.post("/")
def register_service() -> Any:
    """``201`` with the service token on first registration (the only time it is shown)."""
    auth.require_admin()
    data = validation.json_object()
    validation.only_keys(data, {"name", "roles"}, {"name", "roles"})
    name = validation.service_name(data["name"])
    manifest = validation.manifest(data["roles"])
    result = operations.register_service(name, manifest)
    db.session.commit()
    cached = outbox.deliver(result.sync)
    body: dict[str, Any] = {
        "success": True,
        "name": result.service.name,
        "roles": result.service.manifest,
    }
    if result.created:
        body["token"] = result.token
        return body, 201
    body["cached"] = cached
    return body

"""``POST /api/refresh-user-cache/``: load one user's value for one service into Redis."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from .. import auth, operations, validation
from ..refresh import Refreshed, refresh_user

bp = Blueprint("refresh", __name__)


def _answer(result: Refreshed) -> dict[str, Any]:
    attrs = result.attributes
    return {
        "success": True,
        "user_id": attrs.user_id,
        "service_name": attrs.service_name,
        "attributes": attrs.to_dict(),
        "version": attrs.version,
        "ttl": current_app.config["RBAC_ABAC_CACHE_TTL"],
        "cached": result.cached,
        "coalesced": result.coalesced,
    }


@bp.post("/")
def refresh_user_cache() -> Any:
    """The caller's service (or the admin) asks for one user's value (:func:`.refresh_user`).

    A user unknown to the service (no such user, deactivated, or holding no role in that
    service) is a 404 ``user_not_found`` and their cached value is deleted: a service sees only
    the people it has given a role, and only the attributes its registration lists.

    ``"fields"`` (optional, e.g. ``["roles"]``) names the parts that changed since the previous
    version: only those are written into the cached value, in place (see :func:`.refresh_user`).
    """
    caller = auth.authenticate()
    data = validation.json_object()
    validation.only_keys(data, {"user_id", "service_name", "fields"}, {"user_id", "service_name"})
    user_id = validation.user_id(data["user_id"])
    service_name = validation.service_name(data["service_name"])
    fields = None
    if "fields" in data:
        fields = validation.fields(data["fields"], operations.FIELDS)
    caller.authorize_service(service_name)
    return _answer(refresh_user(user_id, service_name, fields))

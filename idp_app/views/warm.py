"""``POST /api/warm-cache/``: write many users' values for one service into Redis at once."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from .. import auth, validation, warming
from ..errors import ApiError

bp = Blueprint("warm", __name__)

SELECTORS = ("user_ids", "active_since", "all")


def selection(data: dict[str, Any]) -> warming.Selection:
    """The one selector of a warm request body; 400 naming the problem otherwise."""
    given = [name for name in SELECTORS if name in data]
    if len(given) != 1:
        found = f" (got {', '.join(given)})" if given else ""
        raise ApiError(400, f"give exactly one of user_ids, active_since, all{found}")
    if "all" in data:
        if data["all"] is not True:
            raise ApiError(400, "all must be true")
        return warming.Selection()
    if "active_since" in data:
        return warming.Selection(
            active_since=validation.date_time(data["active_since"], "active_since")
        )
    ids = data["user_ids"]
    if not isinstance(ids, list) or not 1 <= len(ids) <= warming.MAX_USER_IDS:
        raise ApiError(400, f"user_ids must be a list of 1 to {warming.MAX_USER_IDS} user ids")
    checked = []
    for index, value in enumerate(ids):
        try:
            checked.append(validation.user_id(value))
        except ApiError:
            raise ApiError(
                400, f"user_ids[{index}] must be an integer between 1 and 2**63-1"
            ) from None
    return warming.Selection(user_ids=tuple(checked))


@bp.post("/")
def warm_cache() -> Any:
    """Warm the service's entries: admin token, or the service's own token (else 403)."""
    caller = auth.authenticate()
    data = validation.json_object()
    validation.only_keys(data, {"service_name", *SELECTORS}, {"service_name"})
    service_name = validation.service_name(data["service_name"])
    chosen = selection(data)
    caller.authorize_service(service_name)
    result = warming.warm(service_name, chosen)
    return {
        "success": True,
        "service_name": result.service_name,
        "warmed": result.warmed,
        "unknown": result.unknown,
        "seconds": round(result.seconds, 6),
    }

"""``POST /api/refresh-user-cache/``: load one user's value for one service into Redis."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app

from flask_rbac_abac.shared import Invalidation, UserAttributes

from .. import activity, auth, cache, operations, validation
from ..extensions import db

bp = Blueprint("refresh", __name__)
logger = logging.getLogger("idp_app.refresh")


def _answer(attrs: UserAttributes, *, cached: bool, coalesced: bool = False) -> dict[str, Any]:
    return {
        "success": True,
        "user_id": attrs.user_id,
        "service_name": attrs.service_name,
        "attributes": attrs.to_dict(),
        "version": attrs.version,
        "ttl": current_app.config["RBAC_ABAC_CACHE_TTL"],
        "cached": cached,
        "coalesced": coalesced,
    }


@bp.post("/")
def refresh_user_cache() -> Any:
    """Answer from the database (at most once per key per coalescing window) and write Redis.

    A user unknown to the service (no such user, deactivated, or holding no role in that
    service) is a 404 ``user_not_found`` and their cached value is deleted: a service sees only
    the people it has given a role, and only the attributes its registration lists.
    """
    caller = auth.authenticate()
    data = validation.json_object()
    validation.only_keys(data, {"user_id", "service_name"}, {"user_id", "service_name"})
    user_id = validation.user_id(data["user_id"])
    service_name = validation.service_name(data["service_name"])
    caller.authorize_service(service_name)
    service = operations.get_service(service_name)

    if cache.acquire_refresh(service_name, user_id) is False:
        # Another refresh loaded this key from the database moments ago: answer from its work.
        hit = cache.read(service_name, user_id)
        if hit is not None and hit.roles:  # a role-less entry is a leftover: load again
            return _answer(hit, cached=True, coalesced=True)
        if cache.is_gone(service_name, user_id):
            raise operations.user_not_found(user_id)

    user = operations.lock_user(user_id)
    attrs = operations.value_for_service(user, service)
    if user is None or attrs is None:
        cache.evict(user_id, [service_name])
        cache.mark_gone(service_name, user_id)
        cache.publish(Invalidation(user_id, service_name, None))
        db.session.rollback()
        raise operations.user_not_found(user_id)

    activity.seen(user)  # committed below with the rest of this transaction
    # Written while the user's row is locked: a concurrent change commits after this lands.
    written = cache.write(attrs)
    cached = written is not None
    if written:
        cache.publish(Invalidation(user_id, service_name, attrs.version))
    elif written is False:
        newer = cache.read(service_name, user_id)  # never answer older than what Redis holds
        if newer is not None and newer.version > attrs.version:
            attrs = newer
    else:
        logger.warning("answered %s/%s from the database only", service_name, user_id)
    db.session.commit()
    return _answer(attrs, cached=cached)

"""Users: search and page through, open one, edit roles and attributes, (de)activate, cache."""

from __future__ import annotations

import json
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from flask_rbac_abac.shared import Invalidation

from .. import cache, refresh, validation
from ..domain_errors import UserNotFound
from ..errors import ApiError
from . import ops
from .blueprint import attempt, bp, commit_and_deliver, record_cache_action

PAGE_SIZE = 25


def _active_filter(value: str | None) -> bool | None:
    return {"yes": True, "no": False}.get(value or "")


@bp.get("/users/")
def users() -> str:
    q = request.args.get("q", "").strip()[:64] or None
    active = _active_filter(request.args.get("active"))
    service = request.args.get("service", "").strip() or None
    cursor = request.args.get("cursor", "")
    found = attempt(lambda: ops.list_users(q, active, service, PAGE_SIZE, cursor or None))
    rows, next_cursor = found if found is not None else ([], None)
    return render_template(
        "console/users.html",
        users=rows,
        next_cursor=next_cursor,
        q=q or "",
        active=request.args.get("active", ""),
        service=service or "",
        services=ops.list_services(),
    )


def _detail(user_id: int) -> dict[str, Any]:
    try:
        return dict(ops.user_detail(user_id))
    except UserNotFound:
        abort(404)


def _cache_state(user_id: int, service_name: str) -> dict[str, Any]:
    """What Redis holds for the user in one service: the value, its TTL and version."""
    state: dict[str, Any] = {"service": service_name, "redis": "ok"}
    try:
        ttl = cache.entry_ttl(service_name, user_id)
    except cache.REDIS_ERRORS as exc:
        return {**state, "redis": f"unavailable ({type(exc).__name__})", "value": None}
    state.update(value=cache.read(service_name, user_id), ttl=ttl)
    return state


@bp.get("/users/<user_id:user_id>")
def user(user_id: int) -> str:
    detail = _detail(user_id)
    services = {s.name: s for s in ops.list_services()}
    entries, _ = ops.audit.list_entries(user_id, 50, None)
    return render_template(
        "console/user.html",
        user=detail,
        services=services,
        cache_states=[_cache_state(user_id, name) for name in services],
        attributes_json=json.dumps(detail["attributes"], indent=2, sort_keys=True),
        audit_entries=entries,
    )


def _back(user_id: int) -> BaseResponse:
    return redirect(url_for("console.user", user_id=user_id))


@bp.post("/users/<user_id:user_id>/roles/<service_name>")
def set_roles(user_id: int, service_name: str) -> BaseResponse:
    _detail(user_id)  # 404 for an unknown user

    def change() -> list[str]:
        roles = validation.names(request.form.getlist("roles"), "roles")
        _, sync = ops.set_roles(user_id, validation.service_name(service_name), roles)
        commit_and_deliver(sync)
        return roles

    if attempt(change) is not None:
        flash(f"roles in {service_name} saved", "info")
    return _back(user_id)


@bp.post("/users/<user_id:user_id>/roles/<service_name>/remove")
def remove_roles(user_id: int, service_name: str) -> BaseResponse:
    _detail(user_id)  # 404 for an unknown user

    def change() -> bool:
        sync = ops.remove_roles(user_id, validation.service_name(service_name))
        commit_and_deliver(sync)
        return True

    if attempt(change):
        flash(f"every role in {service_name} removed", "info")
    return _back(user_id)


def _parse_attributes(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ApiError(400, f"attributes are not valid JSON: {exc}") from None
    return validation.attributes(value)


@bp.post("/users/<user_id:user_id>/attributes")
def update_attributes(user_id: int) -> BaseResponse | tuple[str, int]:
    """Replace the attributes with the JSON object given (keys left out are removed)."""
    before = _detail(user_id)["attributes"]

    def change() -> bool:
        wanted = _parse_attributes(request.form.get("attributes", ""))
        changes: dict[str, Any] = {k: None for k in before if k not in wanted}
        changes.update({k: v for k, v in wanted.items() if before.get(k) != v})
        if not changes:
            raise ApiError(400, "no attributes changed")
        _, _, sync = ops.update_attributes(user_id, changes)
        commit_and_deliver(sync)
        return True

    if attempt(change):
        flash("attributes saved", "info")
    return _back(user_id)


@bp.post("/users/<user_id:user_id>/deactivate")
def deactivate(user_id: int) -> BaseResponse:
    def change() -> bool:
        sync = ops.deactivate_user(user_id)
        commit_and_deliver(sync)
        return True

    if attempt(change):
        flash("user deactivated", "info")
    return _back(user_id)


@bp.post("/users/<user_id:user_id>/activate")
def activate(user_id: int) -> BaseResponse:
    def change() -> bool:
        sync = ops.activate_user(user_id)
        commit_and_deliver(sync)
        return True

    if attempt(change):
        flash("user activated", "info")
    return _back(user_id)


@bp.post("/users/<user_id:user_id>/cache/<service_name>/refresh")
def refresh_now(user_id: int, service_name: str) -> BaseResponse:
    """Load the value from the database into Redis now (as a service's refresh would)."""

    def change() -> bool:
        done = refresh.refresh_user(user_id, validation.service_name(service_name))
        record_cache_action("cache_refresh", user_id, service_name)
        return done.cached

    cached = attempt(change)
    if cached is not None:
        flash("refreshed" if cached else "refreshed from the database; Redis failed", "info")
    return _back(user_id)


@bp.post("/users/<user_id:user_id>/cache/<service_name>/invalidate")
def invalidate(user_id: int, service_name: str) -> BaseResponse:
    """Delete the Redis entry and tell every service to drop its copy."""
    name = validation.service_name(service_name)
    ok = cache.evict(user_id, [name]) and cache.publish(Invalidation(user_id, name, None))
    record_cache_action("cache_invalidate", user_id, name)
    flash("invalidated" if ok else "Redis failed: nothing invalidated", "info" if ok else "error")
    return _back(user_id)

"""Services: list, register, edit the manifest, issue and revoke tokens (shown once)."""

from __future__ import annotations

import json
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from .. import validation
from ..domain_errors import ServiceNotRegistered
from ..errors import ApiError
from . import ops
from .blueprint import attempt, bp, commit_and_deliver


def _json_field(field: str, what: str) -> Any:
    try:
        return json.loads(request.form.get(field, ""))
    except ValueError as exc:
        raise ApiError(400, f"{what} is not valid JSON: {exc}") from None


def _detail(name: str) -> dict[str, Any]:
    try:
        return dict(ops.service_detail(name))
    except ServiceNotRegistered:
        abort(404)


@bp.get("/services/")
def services() -> str:
    return render_template("console/services.html", services=ops.list_services())


def _page(name: str, new_token: str | None = None) -> str:
    """The service's page; ``new_token`` is shown on this one response (never stored, never in
    a cookie), so a token is seen once."""
    detail = _detail(name)
    return render_template(
        "console/service.html",
        service=detail,
        roles_json=json.dumps(detail["roles"], indent=2, sort_keys=True),
        attributes_json=json.dumps(detail["attributes"]),
        new_token=new_token,
    )


@bp.post("/services/")
def create_service() -> BaseResponse | str:
    def change() -> str:
        name = validation.service_name(request.form.get("name", ""))
        manifest = validation.manifest(_json_field("roles", "the manifest"))
        result = ops.register_service(name, manifest, ops.UNCHANGED)
        if not result.created:
            raise ApiError(409, f"service {name!r} already exists")
        commit_and_deliver(result.sync)
        return str(result.token)

    token = attempt(change)
    if token is None:
        return redirect(url_for("console.services"))
    return _page(request.form["name"], token)


@bp.get("/services/<name>")
def service(name: str) -> str:
    return _page(name)


@bp.post("/services/<name>/manifest")
def edit_manifest(name: str) -> BaseResponse:
    _detail(name)  # 404 for an unregistered service: this page never creates one

    def change() -> bool:
        manifest = validation.manifest(_json_field("roles", "the manifest"))
        visible = validation.visible_attributes(_json_field("attributes", "the attributes"))
        result = ops.register_service(name, manifest, visible)
        commit_and_deliver(result.sync)
        return True

    if attempt(change):
        flash("manifest saved", "info")
    return redirect(url_for("console.service", name=name))


@bp.post("/services/<name>/tokens")
def issue_token(name: str) -> BaseResponse | str:
    _detail(name)

    def change() -> str:
        _, token = ops.issue_service_token(name)
        commit_and_deliver(None)
        return str(token)

    token = attempt(change)
    if token is None:
        return redirect(url_for("console.service", name=name))
    return _page(name, token)


@bp.post("/services/<name>/tokens/<int:token_id>/revoke")
def revoke_token(name: str, token_id: int) -> BaseResponse:
    def change() -> bool:
        ops.revoke_service_token(name, token_id)
        commit_and_deliver(None)
        return True

    if attempt(change):
        flash(f"token {token_id} revoked", "info")
    return redirect(url_for("console.service", name=name))

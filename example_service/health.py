"""``GET /healthz``: ``ok`` or ``degraded`` for Redis, the identity provider and the subscriber.

Public (``@public``): the view has no rule, so the library never asks for a token here. It
answers from the library's cached state (:meth:`RedisAttributeClient.health_check`), so a
silent Redis or IdP never holds this worker, and it says nothing else: no address, no error
text.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from flask_rbac_abac import public

from . import rbac

bp = Blueprint("health", __name__, url_prefix="/healthz")


@bp.get("")
@public
def healthz() -> Any:
    report = rbac.client.health_check()
    return jsonify(report), 200 if report["status"] == "ok" else 503

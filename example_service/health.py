"""``GET /healthz``: Redis, identity provider and invalidation subscriber status.

Public (``@public``): the view has no rule, so the library never asks for a token here.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, jsonify

from flask_rbac_abac import public

from . import rbac

bp = Blueprint("health", __name__, url_prefix="/healthz")


@bp.get("")
@public
def healthz() -> Any:
    report = rbac.client.health_check()
    status = 200 if report.get("healthy") else 503
    return jsonify({"success": status == 200, "pid": os.getpid(), **report}), status

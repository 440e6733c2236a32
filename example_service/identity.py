"""``GET /whoami``: the caller's attributes as this service sees them, and ``GET /stats``."""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, jsonify

from flask_rbac_abac import current_attributes, predicate, requires, requires_role

from . import rbac

bp = Blueprint("identity", __name__)

#: Any caller whose attributes could be loaded (the library still answers 401 and 503).
authenticated = predicate(lambda user, resource: True, "not authenticated")


@bp.get("/whoami")
@requires(authenticated)
def whoami() -> Any:
    # The worker's pid lets a client (and the e2e tests) see which process answered.
    return jsonify({"success": True, "user": current_attributes.to_dict(), "pid": os.getpid()})


@bp.get("/stats")
@requires_role("admin")
def stats() -> Any:
    """This worker's cache counters (each gunicorn worker counts for itself)."""
    return jsonify({"success": True, "pid": os.getpid(), "stats": rbac.client.stats()})

"""``GET /reports``: totals per department, for callers with ``clearance >= 3``."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from flask import Blueprint, jsonify

from flask_rbac_abac import requires_attribute

from .invoices import store

bp = Blueprint("reports", __name__, url_prefix="/reports")

MIN_CLEARANCE = 3


def enough_clearance(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= MIN_CLEARANCE


@bp.get("")
@requires_attribute("clearance", enough_clearance)
def department_totals() -> Any:
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for invoice in store().all():
        totals[invoice.department] += invoice.amount
        counts[invoice.department] += 1
    report = [
        {"department": d, "invoices": counts[d], "total": round(totals[d], 2)}
        for d in sorted(totals)
    ]
    return jsonify({"success": True, "report": report})

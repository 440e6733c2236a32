"""``GET /api/audit/``: the audit trail, newest first (admin only)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from .. import audit, auth, validation

bp = Blueprint("audit", __name__)


@bp.get("/")
def list_entries() -> Any:
    """One page of entries; ``next_cursor`` fetches the older ones (``null``: no more)."""
    auth.require_admin()
    args = validation.query_args({"user_id", "limit", "cursor"})
    entries, next_cursor = audit.list_entries(
        validation.query_user_id(args.get("user_id")),
        validation.page_limit(args.get("limit")),
        validation.cursor(args.get("cursor")),
    )
    return {
        "success": True,
        "entries": [audit.entry_dict(entry) for entry in entries],
        "next_cursor": next_cursor,
    }

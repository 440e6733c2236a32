"""``GET /healthz``: database, Redis and outbox status."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from sqlalchemy import text

from .. import cache, outbox
from ..extensions import db

bp = Blueprint("health", __name__)


@bp.get("")
def healthz() -> Any:
    """``200`` when the database and Redis both answer, else ``503``.

    Also reports the outbox (changes not yet in Redis: how many, the age in seconds of the
    oldest) and how many corrupt cached values this process has overwritten.
    """
    status: dict[str, dict[str, Any]] = {}
    try:
        db.session.execute(text("SELECT 1"))
        status["database"] = {"ok": True}
        pending = outbox.backlog()
        status["outbox"] = {
            "ok": True,
            "backlog": pending.rows,
            "oldest_age_seconds": pending.oldest_age,
        }
    except Exception as exc:  # any driver error means "not healthy", never a 500
        db.session.rollback()
        status["database"] = {"ok": False, "error": type(exc).__name__}
    try:
        cache.client().ping()
        status["redis"] = {"ok": True}
    except Exception as exc:
        status["redis"] = {"ok": False, "error": type(exc).__name__}
    status["redis"]["repaired_entries"] = cache.repaired_entries()
    ok = all(part["ok"] for part in status.values())
    return {"success": ok, **status}, 200 if ok else 503

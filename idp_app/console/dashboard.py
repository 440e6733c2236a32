"""The dashboard: counts, the outbox backlog, Redis and database health, refresh and denials."""

from __future__ import annotations

from typing import Any

from flask import render_template
from sqlalchemy import func, select, text

from .. import cache, metrics, outbox
from ..extensions import db
from ..models import Service, User
from .blueprint import bp

#: Refresh results that are a refusal (the service was told no).
DENIED = ("not_found", "refused")


def _database() -> str:
    try:
        db.session.execute(text("SELECT 1"))
    except Exception as exc:
        db.session.rollback()
        return f"unavailable ({type(exc).__name__})"
    return "ok"


def _redis() -> str:
    try:
        cache.client().ping()
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"
    return "ok"


def _refreshes() -> dict[str, Any] | None:
    """This process's refresh counts by result, and the share denied; ``None``: metrics off."""
    counts = metrics.refresh_counts()
    if counts is None:
        return None
    total = sum(counts.values())
    denied = sum(counts.get(r, 0.0) for r in DENIED)
    return {"total": int(total), "denied": int(denied), "rate": denied / total if total else None}


@bp.get("/")
def dashboard() -> str:
    database = _database()
    counts: dict[str, int | None] = {"users": None, "active": None, "services": None}
    backlog = None
    if database == "ok":
        counts["users"] = db.session.scalar(select(func.count(User.id)))
        counts["active"] = db.session.scalar(
            select(func.count(User.id)).where(User.active.is_(True))
        )
        counts["services"] = db.session.scalar(select(func.count(Service.id)))
        backlog = outbox.backlog()
    return render_template(
        "console/dashboard.html",
        counts=counts,
        backlog=backlog,
        database=database,
        redis=_redis(),
        refreshes=_refreshes(),
    )

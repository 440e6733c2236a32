"""The console's blueprint and what every page shares: sign-in gate, CSRF, change helper."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.wrappers import Response as BaseResponse

from .. import outbox
from ..domain_errors import OperationError
from ..errors import ApiError
from ..extensions import db
from ..models import ConsoleAdmin
from . import ops

T = TypeVar("T")

bp = Blueprint(
    "console",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
csrf = CSRFProtect()

#: Views a signed-out browser may reach.
PUBLIC_ENDPOINTS = frozenset({"console.sign_in", "console.static"})


@bp.before_request
def _gate() -> BaseResponse | tuple[str, int] | None:
    """No secret: console off (503). Unsafe method: CSRF token checked. Else: signed in."""
    if not current_app.config.get("SECRET_KEY"):
        return render_template("console/off.html"), 503
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()
    admin = _signed_in_admin()
    if admin is None:
        session.pop("admin_id", None)
        if request.endpoint in PUBLIC_ENDPOINTS:
            return None
        return redirect(url_for("console.sign_in", next=request.full_path))
    session.permanent = True  # expires IDP_CONSOLE_SESSION_LIFETIME after the last request
    g.console_admin = admin
    ops.audit.set_actor(actor())  # the operations record their audit entries under this name
    return None


def _signed_in_admin() -> ConsoleAdmin | None:
    """The session's admin, unless it has since been deleted or signed out."""
    admin_id, since = session.get("admin_id"), session.get("signed_in_at")
    if not isinstance(admin_id, int) or not isinstance(since, float):
        return None
    admin = db.session.get(ConsoleAdmin, admin_id)
    if admin is None or (admin.signed_out_at is not None and since <= admin.signed_out_at):
        return None
    return admin


@bp.after_request
def _headers(response: Response) -> Response:
    """Pages show user data and one-time tokens: never cached, never framed."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
    )
    return response


@bp.errorhandler(CSRFError)
def _csrf_refused(exc: CSRFError) -> tuple[str, int]:
    return render_template("console/refused.html", reason=exc.description), 400


def actor() -> str:
    """Who the audit log names for a change made here."""
    return f"console:{g.console_admin.username}"


def attempt(change: Callable[[], T]) -> T | None:
    """Run ``change``; on a refusal (bad input, unknown user...) roll back, flash why, ``None``."""
    try:
        return change()
    except (ApiError, OperationError) as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return None


def commit_and_deliver(sync: ops.Sync | None) -> None:
    """Commit, then tell Redis (the outbox retries if this fails).

    The operation recorded its own audit entry under :func:`actor` (set per request).
    """
    db.session.commit()
    if sync is not None:
        outbox.deliver(sync)


def record_cache_action(action: str, user_id: int, service_name: str) -> None:
    """Audit a console action no operation records (refresh now, invalidate), and commit."""
    ops.audit.record(actor(), action, user_id, service_name, None, None)
    db.session.commit()

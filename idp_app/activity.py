"""When a user was last seen: recorded on token issue and refresh, read by cache warming.

Writing the time on every request would turn each token request and each refresh into a row
write. Instead the stored time is only moved forward once it is older than :data:`GRANULARITY`,
so a busy user costs one ``UPDATE`` per five minutes, and ``active_since`` selections are exact to
within that much. The check uses the row the caller already loaded: no extra query either.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.exc import SQLAlchemyError

from .extensions import db
from .models import User

logger = logging.getLogger("idp_app.activity")

#: Seconds: ``users.last_seen_at`` is rewritten only when older than this.
GRANULARITY = 300.0


def seen(user: User, now: float | None = None) -> bool:
    """Move ``user.last_seen_at`` to now if it is older than :data:`GRANULARITY`.

    Only changes the loaded row: the caller's commit writes it, in the transaction it already
    has. ``True`` when it changed.
    """
    now = time.time() if now is None else now
    if user.last_seen_at is not None and now - user.last_seen_at < GRANULARITY:
        return False
    user.last_seen_at = now
    return True


def seen_and_commit(user: User) -> None:
    """:func:`seen`, committed on its own, best effort: for a caller with nothing else to write.

    A failed write (a busy SQLite, a read-only replica) only loses a hint, so it is logged and
    rolled back rather than failing the request.
    """
    if not seen(user):
        return
    try:
        db.session.commit()
    except SQLAlchemyError as exc:
        db.session.rollback()
        logger.warning("could not record user activity: %s", type(exc).__name__)

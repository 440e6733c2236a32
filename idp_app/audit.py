"""The audit trail: every admin change, who made it, and the state before and after.

Operations call :func:`record` in the same transaction as the change, so a change and its entry
commit (or roll back) together. The actor is set once at the edge with :func:`set_actor` (the
API's authentication, the console's login) and read by the operations with :func:`actor`;
outside a request (the CLI) it is ``"cli"``. Entries never hold a secret: callers pass only
public fields (no password hash, no token; a token is named by its id).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any

from flask import g, has_request_context
from sqlalchemy import select

from .domain_errors import InvalidCursor
from .extensions import db
from .models import MAX_DB_ID, AuditEntry

#: Who acts when nothing at the edge said so and no request is being served: a CLI command.
CLI_ACTOR = "cli"


def set_actor(actor: str) -> None:
    """Name who makes this request's changes: ``admin-token``, ``service:<name>``,
    ``console:<username>``.
    """
    g._idp_actor = actor


def actor() -> str:
    """Who makes the current change (``"cli"`` outside a request)."""
    name = g.get("_idp_actor")
    if name is not None:
        return str(name)
    return "unknown" if has_request_context() else CLI_ACTOR


def record(
    actor: str, action: str, user_id: int | None, target: str, before: Any, after: Any
) -> None:
    """Add an entry to the session; it commits with the change it describes."""
    db.session.add(
        AuditEntry(
            actor=actor[:128],
            action=action,
            user_id=user_id,
            target=target[:256],
            before=before,
            after=after,
        )
    )


def note(action: str, user_id: int | None, target: str, before: Any, after: Any) -> None:
    """:func:`record` by the current :func:`actor` (what operations call)."""
    record(actor(), action, user_id, target, before, after)


def encode_cursor(last_id: int) -> str:
    """An opaque cursor for "the rows after ``last_id``" (callers must not build one)."""
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id an :func:`encode_cursor` cursor stands for.

    :raises InvalidCursor: anything that is not such a cursor.
    """
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise InvalidCursor() from None
    prefix, _, digits = text.partition(":")
    if prefix != "id" or not (digits.isascii() and digits.isdigit()) or len(digits) > 10:
        raise InvalidCursor()
    value = int(digits)
    if not 0 <= value <= MAX_DB_ID:
        raise InvalidCursor()
    return value


def list_entries(
    user_id: int | None, limit: int, cursor: str | None
) -> tuple[list[AuditEntry], str | None]:
    """Entries newest first (``user_id``: only that user's), and the cursor of the next page.

    Pages follow the id, which only grows, so entries added while paging never shift a page.
    """
    if user_id is not None and not 1 <= user_id <= MAX_DB_ID:
        return [], None  # no such user can exist (and PostgreSQL would refuse the number)
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    if user_id is not None:
        query = query.where(AuditEntry.user_id == user_id)
    if cursor is not None:
        query = query.where(AuditEntry.id < decode_cursor(cursor))
    rows = list(db.session.execute(query).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].id) if more and rows else None


def entry_dict(entry: AuditEntry) -> dict[str, Any]:
    """An entry as the API and the CLI show it."""
    return {
        "id": entry.id,
        "created_at": iso(entry.created_at),
        "actor": entry.actor,
        "action": entry.action,
        "user_id": entry.user_id,
        "target": entry.target,
        "before": entry.before,
        "after": entry.after,
    }


def iso(value: Any) -> str | None:
    """ISO 8601 in UTC; a naive time from the database is UTC (the IdP stores only UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return str(value.astimezone(dt.timezone.utc).isoformat())

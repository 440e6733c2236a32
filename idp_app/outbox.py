"""The outbox: committed changes that Redis and the services must still learn about.

A change writes its outbox rows in the same transaction as the change itself (see
:class:`idp_app.operations.Sync`), so once it is committed it cannot be lost: not when Redis is
paused or down, not when the process dies between the commit and the Redis write.

Delivering a row rebuilds the user's current value from the database (the source of truth), so a
repeated or late delivery writes the latest state, never an old one. A row whose change touched
only some fields (one service's roles, some attributes) carries them in its ``patch``, and its
delivery patches the cached values in place instead (no database read): a patch applies only to
an entry holding exactly the version before the change, so it never mixes two states; an entry
it cannot apply to is rebuilt from the database as above, and each later change has its own row.

Delivery claims the row (``SELECT ... FOR UPDATE`` on PostgreSQL, ``SKIP LOCKED`` in the
background so replicas share the rows; on SQLite deleting the row takes the database's write
lock), locks the user, writes Redis through the compare-and-set store with the database's version
as the authority (or deletes the entry of an inactive user), publishes the invalidation, and
commits the row's deletion only when Redis took every step. Otherwise the transaction rolls back
and the row stays for the next attempt.

Three callers deliver: the request that made the change, at once after its commit (the normal,
fast case); a daemon thread in each IdP process, started by the first request the process serves,
which polls every ``IDP_OUTBOX_POLL_INTERVAL`` seconds and backs off exponentially up to
``IDP_OUTBOX_BACKOFF_MAX`` while Redis fails; and ``flask --app idp_app sync-outbox`` for cron.
Several deliverers may write the same row's state (at least once); the store's version guard
makes repeats harmless.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from redis.backoff import ExponentialBackoff
from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from flask_rbac_abac.shared import Invalidation

from . import cache, operations
from .extensions import db
from .models import OutboxEntry, Service

logger = logging.getLogger("idp_app.outbox")

#: Rows claimed per pass of the delivery loop.
BATCH = 100

_lock = threading.Lock()


class Outcome(enum.Enum):
    """What one attempt to deliver one row did."""

    #: Redis took every step and the row is deleted (or another deliverer already did it).
    DELIVERED = "delivered"
    #: Redis failed; the row stays.
    FAILED = "failed"
    #: Another deliverer holds the row right now (background passes only).
    SKIPPED = "skipped"


def deliver(sync: operations.Sync) -> bool:
    """Deliver a just-committed change's rows now; ``True`` when all of them reached Redis.

    Waits for a row another deliverer is working on, so ``True`` means the change is in Redis.
    """
    outcomes = [deliver_one(entry_id, wait=True) for entry_id in sync.entry_ids]
    return all(outcome is Outcome.DELIVERED for outcome in outcomes)


def deliver_one(entry_id: int, *, wait: bool) -> Outcome:
    """Deliver one row in a transaction of its own; see the module docstring for the steps."""
    session = db.session
    try:
        claim = select(OutboxEntry).where(OutboxEntry.id == entry_id)
        entry = session.execute(claim.with_for_update(skip_locked=not wait)).scalar_one_or_none()
        if entry is None:
            session.rollback()
            # Waiting, a missing row was deleted by a deliverer that committed; not waiting, it
            # may also be held by one right now.
            return Outcome.DELIVERED if wait else Outcome.SKIPPED
        user_id, service_name, patch = entry.user_id, entry.service_name, entry.patch
        # On SQLite this DELETE takes the write lock: no change commits until this transaction
        # ends, so the state read below stays the newest while it is written to Redis.
        gone = session.execute(delete(OutboxEntry).where(OutboxEntry.id == entry_id))
        if getattr(gone, "rowcount", 1) == 0:
            session.rollback()
            return Outcome.DELIVERED
        if _push(user_id, service_name, patch):
            session.commit()
            return Outcome.DELIVERED
        session.rollback()
        return Outcome.FAILED
    except SQLAlchemyError as exc:
        session.rollback()
        logger.warning("outbox row %s not delivered: %s", entry_id, type(exc).__name__)
        return Outcome.FAILED


def _push(user_id: int, service_name: str | None, patch: dict[str, Any] | None = None) -> bool:
    """Write the user's state to Redis and announce it; ``True`` when Redis took all.

    A row with a ``patch`` names the fields its change touched per service: each cached value is
    patched in place (no database read); a value the patch cannot apply to (absent, at another
    version, corrupt) is rebuilt from the database like a row without a patch. With
    value-signing keys every value is rebuilt: Lua cannot re-sign a patched value.
    """
    version = None
    evicted = False
    names: list[str] = []
    rebuild: list[str] | None = None
    if patch is not None and not cache.value_keys():
        rebuild = []
        for name, data in sorted(patch.items()):
            names.append(name)
            if data is None:  # no role left there: the service must not know the user
                evicted = True
                if not cache.evict(user_id, [name]):
                    return False
                continue
            change = operations.ServicePatch.from_json(data)
            result = cache.patch(user_id, name, change)
            if result is None:
                return False
            if result.patched:
                version = change.version
            else:
                rebuild.append(name)
    if rebuild == []:  # every value patched (or evicted): no database read at all
        services: Iterable[Service] = []
        user = None
    else:
        # Locked before the services are read, so a concurrent manifest change (which locks
        # every user it affects) is either wholly seen or not at all.
        user = operations.lock_user(user_id)
        if rebuild is None and service_name is None:
            services = operations.all_services()
        else:
            wanted = rebuild if rebuild is not None else [str(service_name)]
            services = db.session.execute(select(Service).where(Service.name.in_(wanted))).scalars()
    for service in services:
        if service.name not in names:
            names.append(service.name)
        # Inactive, gone, or without a role there: the service must not know the user.
        attrs = operations.value_for_service(user, service)
        if attrs is None:
            evicted = True
            ok = cache.evict(user_id, [service.name])
        else:
            version = attrs.version
            ok = cache.write(attrs, authority=attrs.version) is True
        if not ok:
            return False
    cache.clear_coalesce(user_id, names)
    if service_name is None or evicted:
        version = None
    # One service, whose value went: its processes may deny without asking the IdP.
    gone = evicted and service_name is not None and names == [service_name]
    return cache.publish(Invalidation(user_id, service_name, version, gone=gone))


@dataclass(frozen=True)
class Pass:
    """The result of one :func:`deliver_pending` pass."""

    delivered: int
    failed: bool


def deliver_pending(limit: int = BATCH) -> Pass:
    """Deliver up to ``limit`` of the oldest rows; stop at the first that Redis refuses."""
    try:
        ids = list(
            db.session.execute(
                select(OutboxEntry.id).order_by(OutboxEntry.id).limit(limit)
            ).scalars()
        )
        db.session.rollback()
    except SQLAlchemyError as exc:
        db.session.rollback()
        logger.warning("outbox not readable: %s", type(exc).__name__)
        return Pass(0, True)
    delivered = 0
    for entry_id in ids:
        outcome = deliver_one(entry_id, wait=False)
        if outcome is Outcome.FAILED:
            return Pass(delivered, True)
        delivered += outcome is Outcome.DELIVERED
    return Pass(delivered, False)


@dataclass(frozen=True)
class Backlog:
    """Undelivered rows: how many, and the age in seconds of the oldest (``None``: empty)."""

    rows: int
    oldest_age: float | None


def backlog() -> Backlog:
    """Read from the database in one query (fast, whatever Redis is doing)."""
    rows, oldest = db.session.execute(
        select(func.count(OutboxEntry.id), func.min(OutboxEntry.created_at))
    ).one()
    age = None if oldest is None else max(0.0, time.time() - float(oldest))
    return Backlog(int(rows), age)


def run(app: Flask, stop: threading.Event) -> None:
    """Deliver until ``stop`` is set: poll, and back off exponentially while Redis fails."""
    poll = float(app.config["IDP_OUTBOX_POLL_INTERVAL"])
    backoff = ExponentialBackoff(cap=float(app.config["IDP_OUTBOX_BACKOFF_MAX"]), base=poll)
    failures = 0
    while not stop.is_set():
        try:
            with app.app_context():
                result = deliver_pending()
                db.session.remove()
        except Exception as exc:  # the loop must outlive any single bad pass
            logger.warning("outbox pass failed: %s", type(exc).__name__)
            result = Pass(0, True)
        if result.failed:
            failures += 1
            stop.wait(backoff.compute(failures))
        else:
            failures = 0
            if result.delivered < BATCH:
                stop.wait(poll)


def worker_enabled(app: Flask) -> bool:
    setting = app.config["IDP_OUTBOX_WORKER"]
    return bool(not app.config.get("TESTING") if setting is None else setting)


def ensure_worker(app: Flask | None = None) -> None:
    """Start this process's delivery thread unless it runs (cheap: called before each request).

    Started per process id, so a thread of the parent is never assumed to run in a fork.
    """
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    if not worker_enabled(app):
        return
    state = app.extensions["idp_app"]
    pid = os.getpid()
    running = state.get("outbox_worker")
    if running is not None and running[0] == pid:
        return
    with _lock:
        running = state.get("outbox_worker")
        if running is not None and running[0] == pid:
            return
        stop = threading.Event()
        thread = threading.Thread(target=run, args=(app, stop), name="idp-outbox", daemon=True)
        state["outbox_worker"] = (pid, thread, stop)
        thread.start()


def stop_worker(app: Flask, timeout: float = 5.0) -> None:
    """Stop this process's delivery thread (tests; a daemon thread dies with the process)."""
    running = app.extensions["idp_app"].pop("outbox_worker", None)
    if running is not None and running[0] == os.getpid():
        running[2].set()
        running[1].join(timeout)


def init_app(app: Flask) -> None:
    app.before_request(lambda: ensure_worker(app))

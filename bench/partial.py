"""Partial refresh: database statements and bytes sent to Redis for one attribute change.

    make bench          # or: .venv/bin/python bench/partial.py [--services N] [--database URL]

One user holds a role in ``N`` services (default 5), each entry cached in Redis. One attribute
of the user changes (``PATCH /api/users/<id>/attributes`` through the operation it calls), and
its outbox row is delivered, twice over the same state in the same run:

- partial: the row carries the changed fields; delivery patches each cached entry in place (one
  Lua ``EVAL`` per service carrying only the changed attribute) and reads nothing from the
  database but the row itself;
- full: the same change with its row's patch cleared, which is how every change was delivered
  before: delivery reloads the user, the services, each service's roles and version, and
  rewrites every service's whole value.

Statements are counted with a SQLAlchemy ``before_cursor_execute`` listener over the change, its
commit and its delivery; bytes are the sizes of every argument of every Redis command the
delivery sends (the client is wrapped; replies are not counted). Each user gets
:data:`ATTRIBUTES` attributes, so a whole value weighs what a realistic one does.
``tests/idp/test_partial_bench.py`` runs :func:`measure` and checks partial < full for both.

Needs Redis at ``RBAC_ABAC_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); the database is a
SQLite file in a temporary directory unless ``--database`` names another. Keys go under a prefix
of their own and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event, update

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from idp_app import cache, create_app, db, operations, outbox, schema
from idp_app.models import OutboxEntry

REDIS_URL = os.environ.get("RBAC_ABAC_REDIS_URL", "redis://127.0.0.1:6379/0")
MANIFEST = {"admin": ["a:read", "a:write"], "viewer": ["a:read"]}
#: Attributes each user holds: a value of a realistic weight, of which one changes.
ATTRIBUTES = {f"attr{i:02d}": f"value-{i:02d}-" + "x" * 24 for i in range(20)}


@dataclass(frozen=True)
class Cost:
    """What one attribute change cost: the change with its commit, then its delivery."""

    change_statements: int
    delivery_statements: int
    redis_bytes: int
    redis_commands: int

    @property
    def statements(self) -> int:
        return self.change_statements + self.delivery_statements


@dataclass(frozen=True)
class Figures:
    services: int
    partial: Cost
    full: Cost


class _Counter:
    def __init__(self) -> None:
        self.statements = 0
        self.redis_bytes = 0
        self.redis_commands = 0


def _size(arg: Any) -> int:
    if isinstance(arg, bytes | bytearray | memoryview):
        return len(arg)
    return len(str(arg).encode())


@contextmanager
def counting(app: Flask) -> Iterator[_Counter]:
    """Count SQL statements on the app's engine and bytes of Redis commands sent by its client."""
    counter = _Counter()
    client = cache.client(app)
    send = client.execute_command

    def execute_command(*args: Any, **options: Any) -> Any:
        counter.redis_commands += 1
        counter.redis_bytes += sum(_size(a) for a in args)
        return send(*args, **options)

    def statement(*_: Any) -> None:
        counter.statements += 1

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", statement)
    client.execute_command = execute_command
    try:
        yield counter
    finally:
        del client.execute_command
        event.remove(engine, "before_cursor_execute", statement)


def setup(app: Flask, services: int) -> int:
    """A user holding a role in ``services`` services, each entry cached; returns the user id."""
    with app.app_context():
        user = operations.create_user("bench-user", "bench-pass", ATTRIBUTES)
        db.session.commit()
        for n in range(services):
            name = f"svc{n}"
            operations.register_service(name, MANIFEST)
            db.session.commit()
            _, sync = operations.set_roles(user.id, name, ["admin", "viewer"])
            db.session.commit()
            outbox.deliver(sync)
        return int(user.id)


def change(app: Flask, user_id: int, value: str, *, partial: bool) -> Cost:
    """Change one attribute and deliver it, counting; ``partial=False`` clears the row's patch
    (outside the count) so delivery rebuilds every value as it did before partial refresh."""
    with app.app_context():
        with counting(app) as made:
            _, _, sync = operations.update_attributes(user_id, {"attr07": value})
            db.session.commit()
        if not partial:
            db.session.execute(
                update(OutboxEntry).where(OutboxEntry.id.in_(sync.entry_ids)).values(patch=None)
            )
            db.session.commit()
        with counting(app) as delivered:
            if not outbox.deliver(sync):
                raise RuntimeError("Redis did not take the change")
    return Cost(
        made.statements,
        delivered.statements,
        made.redis_bytes + delivered.redis_bytes,
        made.redis_commands + delivered.redis_commands,
    )


def measure(app: Flask, services: int = 5) -> Figures:
    """Both costs for one user with roles in ``services`` services, on ``app``'s database."""
    user_id = setup(app, services)
    full = change(app, user_id, "first", partial=False)
    partial = change(app, user_id, "second", partial=True)
    return Figures(services, partial, full)


def make_app(database_url: str, key_prefix: str) -> Flask:
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "RBAC_ABAC_REDIS_URL": REDIS_URL,
            "RBAC_ABAC_KEY_PREFIX": key_prefix,
            "IDP_ADMIN_TOKEN": "bench-admin-token-" + "x" * 32,
            "IDP_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        }
    )
    with app.app_context():
        schema.upgrade()
    return app


def cleanup(app: Flask, key_prefix: str) -> None:
    client = cache.client(app)
    for key in client.scan_iter(match=f"{key_prefix}:*", count=1000):
        client.delete(key)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=5)
    parser.add_argument("--database", help="SQLAlchemy URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    prefix = f"bench-partial-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'idp.sqlite3'}"
        app = make_app(url, prefix)
        try:
            figures = measure(app, args.services)
        finally:
            cleanup(app, prefix)
    p, f = figures.partial, figures.full
    print(f"partial refresh: one attribute change, user with roles in {figures.services} services")
    print(f"  SQL statements   partial {p.statements:6d}   full {f.statements:6d}")
    print(f"    of which delivery  {p.delivery_statements:6d}        {f.delivery_statements:6d}")
    print(f"  Redis bytes sent partial {p.redis_bytes:6d}   full {f.redis_bytes:6d}")
    print(f"  Redis commands   partial {p.redis_commands:6d}   full {f.redis_commands:6d}")
    print(
        f"  ratio full/partial: statements {f.statements / p.statements:.1f}x, "
        f"bytes {f.redis_bytes / p.redis_bytes:.1f}x"
    )


if __name__ == "__main__":
    main()

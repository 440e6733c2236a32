"""Cache warming: users warmed per second, pipelined batches against one ``SET`` per user.

    make bench          # or: .venv/bin/python bench/warm.py [--users N]

Seeds ``N`` users (default 100 000) holding a role in ``billing_api`` into a PostgreSQL database
of its own (created, and dropped at the end), then measures in the same run:

- the baseline: for each user, one database query (the user, its roles and its version) and one
  Redis ``SET`` round trip: the loop a first version of warming would be; measured over the first
  :data:`BASELINE_USERS` users (at 100k it would take minutes while telling nothing more);
- ``idp_app.warming.warm``: batches of 1000 users, four queries and one pipeline each.

and prints both rates and their ratio (the goal is at least 10x). ``tests/idp/test_warm_bench.py``
runs the same functions on 2k users, on SQLite and PostgreSQL, and checks what they wrote.

Needs Redis at ``RBAC_ABAC_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) and PostgreSQL at
``TEST_POSTGRES_URL``; keys go under a prefix of their own and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import redis
from flask import Flask
from sqlalchemy import insert, make_url, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask_rbac_abac.codec import encode_value
from flask_rbac_abac.keys import attributes_key
from idp_app import create_app, db, operations, schema, warming
from idp_app.models import RoleAssignment, Service, User, UserServiceVersion

REDIS_URL = os.environ.get("RBAC_ABAC_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SERVICE = "billing_api"
MANIFEST = {
    "admin": ["invoice:read", "invoice:write", "report:read"],
    "accountant": ["invoice:read", "invoice:write"],
    "viewer": ["invoice:read"],
}
ROLES = sorted(MANIFEST)
#: Users the one-by-one baseline is timed over.
BASELINE_USERS = 10000
#: Not a real hash: nobody logs in during the benchmark, and hashing 100k passwords would take
#: longer than the whole measurement.
PASSWORD_HASH = "pbkdf2:sha256:1000$bench$" + "0" * 64


def make_app(database_url: str, key_prefix: str) -> Flask:
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "RBAC_ABAC_REDIS_URL": REDIS_URL,
            "RBAC_ABAC_KEY_PREFIX": key_prefix,
            "IDP_ADMIN_TOKEN": "bench-admin-token-" + "x" * 32,
        }
    )
    with app.app_context():
        schema.upgrade()
    return app


def _user_row(i: int, now: datetime) -> dict[str, Any]:
    return {
        "id": i,
        "username": f"user{i}",
        "password_hash": PASSWORD_HASH,
        "active": True,
        "attributes": {"department": ("finance", "sales", "support")[i % 3], "clearance": i % 5},
        "created_at": now,
        "last_seen_at": float(i),
    }


def seed(app: Flask, users: int) -> None:
    """``users`` users, ids 1..users, each holding one role in :data:`SERVICE` at version 1.

    PostgreSQL gets ``COPY`` (100k users in seconds); other databases a bulk ``INSERT``.
    """
    now = datetime.now(timezone.utc)
    with app.app_context():
        operations.register_service(SERVICE, MANIFEST)
        service_id = db.session.execute(
            select(Service.id).where(Service.name == SERVICE)
        ).scalar_one()
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            _copy(app, users, service_id, now)
            return
        db.session.execute(insert(User), [_user_row(i, now) for i in range(1, users + 1)])
        db.session.execute(
            insert(RoleAssignment),
            [
                {"user_id": i, "service_id": service_id, "role": ROLES[i % 3]}
                for i in range(1, users + 1)
            ],
        )
        db.session.execute(
            insert(UserServiceVersion),
            [{"user_id": i, "service_id": service_id, "version": 1} for i in range(1, users + 1)],
        )
        db.session.commit()


def _copy(app: Flask, users: int, service_id: int, now: datetime) -> None:
    connection = db.engine.raw_connection()
    try:
        cursor = connection.cursor()
        columns = "id, username, password_hash, active, attributes, created_at, last_seen_at"
        with cursor.copy(f"COPY users ({columns}) FROM STDIN") as copy:
            for i in range(1, users + 1):
                row = _user_row(i, now)
                row["attributes"] = json.dumps(row["attributes"])
                copy.write_row(list(row.values()))
        with cursor.copy("COPY role_assignments (user_id, service_id, role) FROM STDIN") as copy:
            for i in range(1, users + 1):
                copy.write_row((i, service_id, ROLES[i % 3]))
        with cursor.copy(
            "COPY user_service_versions (user_id, service_id, version) FROM STDIN"
        ) as copy:
            for i in range(1, users + 1):
                copy.write_row((i, service_id, 1))
        cursor.execute("SELECT setval('users_id_seq', %s)", (users,))
        cursor.execute("ANALYZE")
        connection.commit()
    finally:
        connection.close()


def warm_pipelined(app: Flask) -> warming.WarmResult:
    """Every user of :data:`SERVICE`, the way ``POST /api/warm-cache/`` does it."""
    with app.app_context():
        return warming.warm(SERVICE, warming.Selection())


def warm_one_by_one(app: Flask, user_ids: range) -> float:
    """The baseline: per user one query and one ``SET``; returns the seconds it took."""
    with app.app_context():
        config = app.config
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
        service = operations.get_service(SERVICE)
        started = time.perf_counter()
        for user_id in user_ids:
            rows = db.session.execute(
                select(User, RoleAssignment.role, UserServiceVersion.version)
                .join(RoleAssignment, RoleAssignment.user_id == User.id)
                .outerjoin(
                    UserServiceVersion,
                    (UserServiceVersion.user_id == User.id)
                    & (UserServiceVersion.service_id == service.id),
                )
                .where(User.id == user_id, RoleAssignment.service_id == service.id)
            ).all()
            if not rows:
                continue
            user = rows[0][0]
            attrs = operations.value_from_rows(
                user.id, user.attributes, service, [r[1] for r in rows], int(rows[0][2] or 0)
            )
            client.set(
                attributes_key(config["RBAC_ABAC_KEY_PREFIX"], SERVICE, user_id),
                encode_value(attrs),
                ex=config["RBAC_ABAC_CACHE_TTL"],
            )
        seconds = time.perf_counter() - started
        db.session.rollback()
        client.close()
        return seconds


def delete_keys(key_prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    batch = []
    for key in client.scan_iter(match=f"{key_prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)
    client.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A PostgreSQL database of its own, dropped afterwards."""
    url = make_url(POSTGRES_URL)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = "bench_warm_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def dispose(app: Flask) -> None:
    with app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()  # no pooled connection left on the database about to be dropped
    client = app.extensions["idp_app"].get("redis")
    if client is not None:
        client[1].close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=100_000)
    users = parser.parse_args().users
    key_prefix = "benchwarm" + uuid.uuid4().hex[:8]
    with postgres_database() as url:
        app = make_app(url, key_prefix)
        try:
            started = time.perf_counter()
            seed(app, users)
            print(f"seeded {users} users on PostgreSQL in {time.perf_counter() - started:.1f} s")
            sample = range(1, min(users, BASELINE_USERS) + 1)
            baseline = warm_one_by_one(app, sample)
            delete_keys(key_prefix)
            result = warm_pipelined(app)
        finally:
            dispose(app)
            delete_keys(key_prefix)
    one_rate = len(sample) / baseline
    rate = result.warmed / result.seconds
    print(f"\ncache warming, {users} users on PostgreSQL and Redis")
    print(f"{'method':44} {'users':>8} {'seconds':>8} {'users/s':>10}")
    print(
        f"{'one query + one SET per user (baseline)':44} {len(sample):8} {baseline:8.2f} "
        f"{one_rate:10.0f}"
    )
    print(
        f"{'warming: batches of 1000, one pipeline each':44} {result.warmed:8} "
        f"{result.seconds:8.2f} {rate:10.0f}"
    )
    print(f"ratio: {rate / one_rate:.1f}x (goal >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

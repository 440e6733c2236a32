"""``bench/warm.py`` at a small scale, checked: what the benchmark measures is right.

2000 users on SQLite and on PostgreSQL, the real Redis: every key is written with a jittered
TTL, in a few pipelines (Redis round trips counted on the connection) and a bounded number of
SQL statements per batch (counted with a SQLAlchemy event listener); the one-by-one baseline
writes the same values.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from sqlalchemy import event

from bench import warm as bench
from flask_rbac_abac.keys import attributes_key
from flask_rbac_abac.model import UserAttributes
from idp_app import db, warming
from tests.conftest import REDIS_URL

USERS = 2000
TTL = 86400


class CountingConnection(redis.Connection):
    """A connection that counts what it sends: one packet per command, one per pipeline."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sent += 1
        super().send_packed_command(command, check_health)


@contextmanager
def statements(app: Any) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_the_benchmark_warms_every_user_in_few_round_trips(
    make_app: Any, database_url: str, real_redis: redis.Redis, key_prefix: str
) -> None:
    app = make_app(database_url)
    bench.seed(app, USERS)
    pool = redis.ConnectionPool.from_url(
        REDIS_URL, connection_class=CountingConnection, socket_timeout=5
    )
    counting = redis.Redis(connection_pool=pool)
    app.extensions["idp_app"]["redis"] = (os.getpid(), counting)
    CountingConnection.sent = 0
    try:
        with statements(app) as sql:
            result = bench.warm_pipelined(app)
        round_trips = CountingConnection.sent
    finally:
        counting.close()
        app.extensions["idp_app"].pop("redis")

    assert (result.warmed, result.unknown) == (USERS, [])
    batches = -(-USERS // warming.BATCH_SIZE)
    # One pipeline per batch, plus at most: the connection's handshake, SCRIPT LOAD and one
    # batch sent again after NOSCRIPT.
    assert batches <= round_trips <= batches + 4, round_trips
    # Four reads per batch, the empty page that ends the selection, and the service lookup.
    assert len(sql) <= 4 * batches + 2, [" ".join(s.split())[:50] for s in sql]

    pipe = real_redis.pipeline(transaction=False)
    for user_id in range(1, USERS + 1):
        key = attributes_key(key_prefix, bench.SERVICE, user_id)
        pipe.get(key)
        pipe.ttl(key)
    answers = pipe.execute()
    values = [UserAttributes.from_json(raw) for raw in answers[0::2]]
    ttls = answers[1::2]
    assert [v.user_id for v in values] == list(range(1, USERS + 1))
    assert all(v.roles == (bench.ROLES[v.user_id % 3],) and v.version == 1 for v in values)
    assert all(0.9 * TTL - 5 <= ttl <= TTL for ttl in ttls), (min(ttls), max(ttls))
    assert len(set(ttls)) > 100  # spread over the tenth, not one expiry second for everyone

    # The baseline does the same work, one user at a time.
    for user_id in range(1, 51):
        real_redis.delete(attributes_key(key_prefix, bench.SERVICE, user_id))
    with statements(app) as sql:
        bench.warm_one_by_one(app, range(1, 51))
    assert len(sql) >= 50
    for warmed in values[:50]:
        raw = real_redis.get(attributes_key(key_prefix, bench.SERVICE, warmed.user_id))
        again = UserAttributes.from_json(raw)
        assert {**again.to_dict(), "fetched_at": 0} == {**warmed.to_dict(), "fetched_at": 0}

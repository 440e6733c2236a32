"""``bench/partial.py``, checked: partial refresh costs fewer statements and fewer bytes.

The benchmark's own :func:`bench.partial.measure`, on SQLite and the real PostgreSQL with the real
Redis, for a user holding roles in five services. Counts, not times, so the loaded machine does
not matter.
"""

from __future__ import annotations

from typing import Any

from bench import partial as bench
from flask_rbac_abac.keys import attributes_key
from idp_app import db, operations


def test_partial_costs_fewer_statements_and_bytes_than_full(make_app, database_url, real_redis):
    app = make_app(database_url)
    figures = bench.measure(app, services=5)
    partial, full = figures.partial, figures.full
    assert partial.statements < full.statements
    assert partial.redis_bytes < full.redis_bytes
    # Delivery reads nothing but its row (claim, delete) instead of rebuilding five values.
    assert partial.delivery_statements == 2
    assert full.delivery_statements > 5 * 2
    # Bytes: the changed attribute five times, not five whole values (a wide margin: 3x).
    assert partial.redis_bytes * 3 < full.redis_bytes
    # And what both left in Redis is the database's state.
    prefix = app.config["RBAC_ABAC_KEY_PREFIX"]
    with app.app_context():
        user = operations.user_by_name("bench-user")
        assert user is not None
        for n in range(5):
            service = operations.get_service(f"svc{n}")
            expected: Any = operations.build_attributes(user, service)
            raw = real_redis.get(attributes_key(prefix, f"svc{n}", user.id))
            got = type(expected).from_json(raw)
            assert {**got.to_dict(), "fetched_at": 0} == {**expected.to_dict(), "fetched_at": 0}
            assert got.get("attr07") == "second"
        db.session.rollback()

"""Cache warming: ``POST /api/warm-cache/``, the ``warm-cache`` command, and last activity.

On SQLite and PostgreSQL (the ``app`` fixture) with the real Redis under the test's key prefix;
the cluster case on the suite's own Redis Cluster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select, update

from flask_rbac_abac.codec import decode_value
from flask_rbac_abac.connection import close, connect
from flask_rbac_abac.keys import attributes_key
from flask_rbac_abac.model import UserAttributes
from idp_app import activity, db, operations, warming
from idp_app.models import User
from tests.servers import free_port

from .conftest import ADMIN, Api, bearer

TTL = 86400
WARM = "/api/warm-cache/"


def warm(api: Api, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return api.client.post(WARM, json=body, headers=ADMIN if headers is None else headers)


def stored(real_redis: Any, prefix: str, user_id: int, service: str = "billing_api") -> Any:
    raw = real_redis.get(attributes_key(prefix, service, user_id))
    return None if raw is None else UserAttributes.from_json(raw)


def forget(real_redis: Any, prefix: str) -> None:
    """Delete the values that setting roles wrote, so what a warm writes can be seen."""
    for key in real_redis.scan_iter(match=f"{prefix}:attrs:*"):
        real_redis.delete(key)


@pytest.fixture
def people(api: Api, real_redis: Any, key_prefix: str) -> dict[str, int]:
    """billing_api with alice (admin) and bob (viewer); carol without a role; dave deactivated;
    nothing in Redis."""
    api.service()
    ids = {
        name: api.user(name, {"department": name, "clearance": n})
        for n, name in enumerate(("alice", "bob", "carol", "dave"))
    }
    api.roles(ids["alice"], ["admin"])
    api.roles(ids["bob"], ["viewer"])
    api.roles(ids["dave"], ["viewer"])
    assert api.client.delete(f"/api/users/{ids['dave']}", headers=ADMIN).status_code == 200
    forget(real_redis, key_prefix)
    return ids


def test_user_ids_warms_known_users_and_reports_the_others(
    api: Api, people: dict[str, int], real_redis: Any, key_prefix: str
) -> None:
    alice, bob, carol, dave = (people[n] for n in ("alice", "bob", "carol", "dave"))
    asked = [bob, alice, carol, dave, 999, 2**40, alice]
    r = warm(api, {"service_name": "billing_api", "user_ids": asked})
    assert r.status_code == 200, r.json
    assert r.json["success"] is True
    assert r.json["service_name"] == "billing_api"
    assert r.json["warmed"] == 2
    assert r.json["unknown"] == [carol, dave, 999, 2**40]
    assert 0 <= r.json["seconds"] < 30
    for user_id in (alice, bob):
        value = stored(real_redis, key_prefix, user_id)
        # The same value a refresh computes (fetched_at aside).
        refreshed = api.refresh(user_id).json["attributes"]
        assert {**value.to_dict(), "fetched_at": 0} == {**refreshed, "fetched_at": 0}
    assert stored(real_redis, key_prefix, alice).roles == ("admin",)
    for user_id in (carol, dave, 999):
        assert stored(real_redis, key_prefix, user_id) is None


def test_all_selects_active_users_with_a_role_only(
    api: Api, people: dict[str, int], real_redis: Any, key_prefix: str
) -> None:
    r = warm(api, {"service_name": "billing_api", "all": True})
    assert r.status_code == 200, r.json
    assert (r.json["warmed"], r.json["unknown"]) == (2, [])
    keys = sorted(real_redis.scan_iter(match=f"{key_prefix}:attrs:*"))
    assert keys == sorted(
        attributes_key(key_prefix, "billing_api", people[n]).encode() for n in ("alice", "bob")
    )


def test_active_since_selects_users_seen_since(
    app: Any, api: Api, people: dict[str, int], real_redis: Any, key_prefix: str
) -> None:
    before = time.time() - 1
    r = api.client.post("/api/token", json={"username": "bob", "password": "bob-pass"})
    assert r.status_code == 200
    # carol was seen too, but holds no role in billing_api: least privilege keeps her out.
    r = api.client.post("/api/token", json={"username": "carol", "password": "carol-pass"})
    assert r.status_code == 200
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(before))
    r = warm(api, {"service_name": "billing_api", "active_since": since})
    assert r.status_code == 200, r.json
    assert (r.json["warmed"], r.json["unknown"]) == (1, [])
    assert stored(real_redis, key_prefix, people["bob"]) is not None
    assert stored(real_redis, key_prefix, people["alice"]) is None
    later = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 60))
    r = warm(api, {"service_name": "billing_api", "active_since": later})
    assert (r.status_code, r.json["warmed"]) == (200, 0)


def test_the_service_sees_only_its_declared_attributes(
    api: Api, real_redis: Any, key_prefix: str
) -> None:
    r = api.client.post(
        "/api/services/",
        json={"name": "billing_api", "roles": {"viewer": ["invoice:read"]}, "attributes": ["plan"]},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.json
    uid = api.user("alice", {"plan": "pro", "salary": 100})
    api.roles(uid, ["viewer"])
    forget(real_redis, key_prefix)
    assert warm(api, {"service_name": "billing_api", "all": True}).json["warmed"] == 1
    value = stored(real_redis, key_prefix, uid)
    assert dict(value.attributes) == {"plan": "pro"}
    assert value.permissions == ("invoice:read",)


def test_ttls_are_jittered_within_a_tenth(
    api: Api, real_redis: Any, key_prefix: str, app: Any
) -> None:
    api.service()
    ids = [api.user(f"user{i}") for i in range(30)]
    for uid in ids:
        api.roles(uid, ["viewer"])
    forget(real_redis, key_prefix)
    assert warm(api, {"service_name": "billing_api", "user_ids": ids}).json["warmed"] == 30
    ttls = [real_redis.ttl(attributes_key(key_prefix, "billing_api", uid)) for uid in ids]
    assert all(0.9 * TTL - 2 <= ttl <= TTL for ttl in ttls), ttls
    assert len(set(ttls)) > 5, ttls


def test_a_newer_value_in_redis_is_kept(
    api: Api, people: dict[str, int], real_redis: Any, key_prefix: str
) -> None:
    """A value newer than what the warm read (written by a change committed meanwhile) stays;
    an older one is replaced."""
    alice, bob = people["alice"], people["bob"]
    newer = UserAttributes(user_id=alice, service_name="billing_api", roles=["viewer"], version=7)
    real_redis.set(attributes_key(key_prefix, "billing_api", alice), newer.to_json(), ex=TTL)
    older = UserAttributes(user_id=bob, service_name="billing_api", roles=["admin"], version=0)
    real_redis.set(attributes_key(key_prefix, "billing_api", bob), older.to_json(), ex=TTL)
    r = warm(api, {"service_name": "billing_api", "user_ids": [alice, bob]})
    assert r.status_code == 200, r.json
    assert (r.json["warmed"], r.json["unknown"]) == (1, [])
    kept = stored(real_redis, key_prefix, alice)
    assert (kept.version, kept.roles) == (7, ("viewer",))
    assert real_redis.ttl(attributes_key(key_prefix, "billing_api", alice)) > TTL - 60
    assert stored(real_redis, key_prefix, bob).roles == ("viewer",)


def test_values_are_signed_with_the_value_keys(
    make_app: Any, sqlite_url: str, real_redis: Any, key_prefix: str
) -> None:
    keys = "idp1:" + "k" * 40
    app = make_app(sqlite_url, RBAC_ABAC_VALUE_KEYS=keys)
    api = Api(app.test_client())
    api.service()
    uid = api.user("alice")
    api.roles(uid, ["viewer"])
    real_redis.delete(attributes_key(key_prefix, "billing_api", uid))
    # An unsigned value claiming a newer version was not written by this IdP: replaced.
    forged = UserAttributes(user_id=uid, service_name="billing_api", roles=["admin"], version=9)
    real_redis.set(attributes_key(key_prefix, "billing_api", uid), forged.to_json(), ex=TTL)
    r = warm(api, {"service_name": "billing_api", "all": True})
    assert (r.status_code, r.json["warmed"]) == (200, 1)
    raw = real_redis.get(attributes_key(key_prefix, "billing_api", uid))
    with app.app_context():
        value = decode_value(raw, app.config["RBAC_ABAC_VALUE_KEYS"])
    assert (value.roles, value.version) == (("viewer",), 1)
    assert json.loads(raw)["sig"]


def test_auth_matrix(api: Api, people: dict[str, int]) -> None:
    other = api.service("shipping_api", {"clerk": ["parcel:read"]})
    body = {"service_name": "billing_api", "all": True}
    assert warm(api, body, headers={}).status_code == 401
    assert warm(api, body, headers=bearer("svc_wrong")).json == {
        "success": False,
        "error": "missing or invalid bearer token",
    }
    r = warm(api, body, headers=bearer(other))
    assert (r.status_code, r.json["error"]) == (
        403,
        "this token is not valid for service 'billing_api'",
    )
    assert warm(api, body).status_code == 200
    r = warm(api, {"service_name": "nope", "all": True})
    assert (r.status_code, r.json["error"]) == (404, "service 'nope' is not registered")


def test_the_service_token_may_warm_its_own_service(
    make_app: Any, sqlite_url: str, real_redis: Any
) -> None:
    app = make_app(sqlite_url)
    api = Api(app.test_client())
    token = api.service()
    api.roles(api.user("alice"), ["viewer"])
    r = warm(api, {"service_name": "billing_api", "all": True}, headers=bearer(token))
    assert (r.status_code, r.json["warmed"]) == (200, 1)


SELECTOR_ERROR = "give exactly one of user_ids, active_since, all"
DATE_ERROR = "active_since must be an ISO 8601 date-time with a timezone, like 2026-11-26T08:00:00Z"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"service_name": "billing_api"}, SELECTOR_ERROR),
        (
            {"service_name": "billing_api", "all": True, "user_ids": [1]},
            SELECTOR_ERROR + " (got user_ids, all)",
        ),
        ({"all": True}, "missing field(s): service_name"),
        ({"service_name": "billing_api", "all": True, "x": 1}, "unknown field(s): x"),
        ({"service_name": "billing_api", "all": False}, "all must be true"),
        ({"service_name": "billing_api", "all": 1}, "all must be true"),
        (
            {"service_name": "billing_api", "user_ids": []},
            "user_ids must be a list of 1 to 5000 user ids",
        ),
        (
            {"service_name": "billing_api", "user_ids": 5},
            "user_ids must be a list of 1 to 5000 user ids",
        ),
        (
            {"service_name": "billing_api", "user_ids": list(range(1, 5002))},
            "user_ids must be a list of 1 to 5000 user ids",
        ),
        (
            {"service_name": "billing_api", "user_ids": [1, "2"]},
            "user_ids[1] must be an integer between 1 and 2**63-1",
        ),
        (
            {"service_name": "billing_api", "user_ids": [0]},
            "user_ids[0] must be an integer between 1 and 2**63-1",
        ),
        (
            {"service_name": "billing_api", "user_ids": [True]},
            "user_ids[0] must be an integer between 1 and 2**63-1",
        ),
        ({"service_name": "billing_api", "active_since": "2026-11-26"}, DATE_ERROR),
        ({"service_name": "billing_api", "active_since": "2026-11-26T08:00:00"}, DATE_ERROR),
        ({"service_name": "billing_api", "active_since": "2026-02-30T08:00:00Z"}, DATE_ERROR),
        ({"service_name": "billing_api", "active_since": 1700000000}, DATE_ERROR),
        (
            {"service_name": "bad:name", "all": True},
            "invalid service_name 'bad:name': expected 1-64 characters from A-Z a-z 0-9 _ . -",
        ),
    ],
)
def test_bad_input_is_a_400_naming_the_problem(
    api: Api, people: dict[str, int], body: Any, error: str
) -> None:
    r = warm(api, body)
    assert r.status_code == 400, r.json
    assert r.json == {"success": False, "error": error}


def test_the_longest_id_list_fits_in_a_request_body(api: Api, people: dict[str, int]) -> None:
    """5000 ids of the most digits the database holds stay under the 64 KiB body limit."""
    ids = [2**31 - 1 - i for i in range(warming.MAX_USER_IDS)]
    r = warm(api, {"service_name": "billing_api", "user_ids": ids})
    assert r.status_code == 200, r.json
    assert (r.json["warmed"], r.json["unknown"]) == (0, sorted(ids))


def test_bad_input_is_checked_before_the_service_token(api: Api) -> None:
    """As at the refresh endpoint: a token is checked first (401), then the body (400)."""
    api.service()
    assert warm(api, {"service_name": "billing_api"}, headers={}).status_code == 401
    r = api.client.post(WARM, data="not json", headers=ADMIN)
    assert r.json == {"success": False, "error": "request body is not valid JSON"}


def test_redis_down_is_a_503(make_app: Any, sqlite_url: str, real_redis: Any) -> None:
    app = make_app(sqlite_url, RBAC_ABAC_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    api = Api(app.test_client())
    api.service()
    api.roles(api.user("alice"), ["viewer"])
    r = warm(api, {"service_name": "billing_api", "all": True})
    assert r.status_code == 503
    assert r.json == {
        "success": False,
        "error": "Redis is unavailable: warmed 0 users of 'billing_api' before it failed",
    }


def test_warmed_keys_are_counted(make_app: Any, sqlite_url: str, real_redis: Any) -> None:
    app = make_app(sqlite_url, IDP_METRICS_ENABLED=True)
    api = Api(app.test_client())
    api.service()
    for name in ("alice", "bob"):
        api.roles(api.user(name), ["viewer"])
    assert warm(api, {"service_name": "billing_api", "all": True}).json["warmed"] == 2
    text = api.client.get("/metrics").get_data(as_text=True)
    assert "idp_warmed_keys_total 2.0" in text


def test_batches_cover_every_user(app: Any, api: Api, real_redis: Any, key_prefix: str) -> None:
    """Batches smaller than the selection: keyset pages and id chunks both cover everyone once."""
    api.service()
    ids = [api.user(f"user{i}") for i in range(7)]
    for uid in ids[:6]:
        api.roles(uid, ["viewer"])
    done: list[int] = []
    with app.app_context():
        result = warming.warm(
            "billing_api", warming.Selection(), progress=done.append, batch_size=2
        )
        assert (result.warmed, done) == (6, [2, 2, 2])
        assert warming.count(operations.get_service("billing_api"), warming.Selection()) == 6
        done.clear()
        result = warming.warm(
            "billing_api",
            warming.Selection(user_ids=tuple(ids)),
            progress=done.append,
            batch_size=3,
        )
        assert (result.warmed, result.unknown, done) == (6, [ids[6]], [3, 3, 1])


# -- last activity ---------------------------------------------------------------------------


@contextmanager
def updates_of_users(app: Any) -> Iterator[list[str]]:
    """The ``UPDATE users`` statements sent while the block runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE USERS"):
            seen.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def last_seen(app: Any, user_id: int) -> float | None:
    with app.app_context():
        return db.session.execute(select(User.last_seen_at).where(User.id == user_id)).scalar()


def age(app: Any, user_id: int, seconds: float) -> None:
    with app.app_context():
        db.session.execute(
            update(User).where(User.id == user_id).values(last_seen_at=time.time() - seconds)
        )
        db.session.commit()


def test_token_issue_records_activity_once_per_granularity(
    make_app: Any, database_url: str, real_redis: Any
) -> None:
    app = make_app(database_url, IDP_TOKEN_RATE_LIMIT_PER_USER="100/minute")
    api = Api(app.test_client())
    uid = api.user("alice")
    assert last_seen(app, uid) is None
    login = {"username": "alice", "password": "alice-pass"}
    with updates_of_users(app) as updates:
        for _ in range(5):
            assert api.client.post("/api/token", json=login).status_code == 200
    assert len(updates) == 1, updates
    assert time.time() - 5 < last_seen(app, uid) <= time.time()
    age(app, uid, activity.GRANULARITY - 30)
    with updates_of_users(app) as updates:
        assert api.client.post("/api/token", json=login).status_code == 200
    assert updates == []
    age(app, uid, activity.GRANULARITY + 1)
    with updates_of_users(app) as updates:
        assert api.client.post("/api/token", json=login).status_code == 200
    assert len(updates) == 1
    assert time.time() - 5 < last_seen(app, uid)
    # A refused login is not activity.
    age(app, uid, activity.GRANULARITY + 1)
    assert api.client.post("/api/token", json={**login, "password": "no"}).status_code == 401
    assert last_seen(app, uid) < time.time() - activity.GRANULARITY


def test_refresh_records_activity_once_per_granularity(
    make_app: Any, database_url: str, real_redis: Any
) -> None:
    app = make_app(database_url, IDP_REFRESH_COALESCE_SECONDS=0)
    api = Api(app.test_client())
    api.service()
    uid = api.user("alice")
    api.roles(uid, ["viewer"])
    with updates_of_users(app) as updates:
        for _ in range(5):
            assert api.refresh(uid).status_code == 200
    assert len(updates) == 1, updates
    assert time.time() - 5 < last_seen(app, uid) <= time.time()
    age(app, uid, activity.GRANULARITY + 1)
    with updates_of_users(app) as updates:
        assert api.refresh(uid).status_code == 200
        assert api.refresh(uid).status_code == 200
    assert len(updates) == 1
    # Unknown to the service (no role left): not recorded.
    other = api.user("bob")
    assert api.refresh(other).status_code == 404
    assert last_seen(app, other) is None


# -- the command -----------------------------------------------------------------------------


def test_command_prints_one_line_when_not_on_a_terminal(app: Any, people: dict[str, int]) -> None:
    result = app.test_cli_runner().invoke(
        args=["warm-cache", "--service", "billing_api", "--users", f"{people['alice']},999"]
    )
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert line.startswith("warmed 1 users for billing_api in ")
    assert line.endswith(" s (1 unknown)")
    result = app.test_cli_runner().invoke(args=["warm-cache", "--service", "billing_api", "--all"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("warmed 2 users for billing_api in ")
    result = app.test_cli_runner().invoke(
        args=["warm-cache", "--service", "billing_api", "--active-since", "2000-01-01T00:00:00Z"]
    )
    assert result.output.startswith("warmed 0 users for billing_api in ")  # nobody logged in


def test_command_shows_a_progress_bar_on_a_terminal(
    app: Any, people: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from idp_app import cli

    monkeypatch.setattr(cli, "_on_a_terminal", lambda: True)
    result = app.test_cli_runner().invoke(args=["warm-cache", "--service", "billing_api", "--all"])
    assert result.exit_code == 0, result.output
    assert "warming billing_api" in result.output
    assert "warmed 2 users for billing_api in " in result.output


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ([], "give exactly one of --all, --active-since, --users"),
        (["--all", "--users", "1"], "give exactly one of --all, --active-since, --users"),
        (["--users", "1,x"], "--users must be user ids separated by commas, like 1,2,3"),
        (["--users", "0"], "user_id must be an integer between 1 and 2**63-1"),
        (["--active-since", "yesterday"], "--active-since must be an ISO 8601 date-time"),
    ],
)
def test_command_refuses_bad_selectors(app: Any, args: list[str], error: str) -> None:
    result = app.test_cli_runner().invoke(args=["warm-cache", "--service", "billing_api", *args])
    assert result.exit_code == 2, result.output
    assert error in result.output


def test_command_names_an_unregistered_service(app: Any) -> None:
    result = app.test_cli_runner().invoke(args=["warm-cache", "--service", "nope", "--all"])
    assert result.exit_code == 1
    assert "service 'nope' is not registered" in result.output


# -- Redis Cluster ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_warming_on_a_cluster_writes_every_slot(
    make_app: Any, sqlite_url: str, redis_cluster: Any, key_prefix: str
) -> None:
    """The cluster pipeline splits a batch by slot; every key lands on its own shard."""
    app = make_app(sqlite_url, RBAC_ABAC_REDIS_URL=redis_cluster.url)
    api = Api(app.test_client())
    api.service()
    ids = [api.user(f"user{i}") for i in range(40)]
    for uid in ids:
        api.roles(uid, ["viewer"])
    client = connect(redis_cluster.url, timeout=1.0)
    try:
        keys = [attributes_key(key_prefix, "billing_api", uid) for uid in ids]
        for key in keys:
            client.delete(key)
        assert len({client.keyslot(k) for k in keys}) > 1
        client.script_flush()  # the first batch gets NOSCRIPT, loads the script, sends again
        r = warm(api, {"service_name": "billing_api", "user_ids": ids})
        assert (r.status_code, r.json["warmed"]) == (200, 40), r.json
        for uid, key in zip(ids, keys, strict=True):
            value = UserAttributes.from_json(client.get(key))
            assert (value.user_id, value.roles) == (uid, ("viewer",))
            assert 0.9 * TTL - 2 <= client.ttl(key) <= TTL
    finally:
        for key in [attributes_key(key_prefix, "billing_api", uid) for uid in ids]:
            client.delete(key)
        close(client)

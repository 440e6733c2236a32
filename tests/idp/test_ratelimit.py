"""``POST /api/token`` is rate-limited per username and per client address (issue 7, section 4)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from flask_rbac_abac import ConfigurationError
from idp_app import ratelimit
from tests.conftest import REDIS_URL

from .conftest import Api

TOKEN = "/api/token"
LIMITED = {"success": False, "error": "too many attempts; retry later", "code": "rate_limited"}


def attempt(client: Any, username: str, password: str, address: str = "10.0.0.1", **kw: Any) -> Any:
    return client.post(
        TOKEN,
        json={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": address},
        **kw,
    )


def assert_limited(r: Any, window: int = 60) -> None:
    assert r.status_code == 429
    assert r.json == LIMITED
    assert 0 <= int(r.headers["Retry-After"]) <= window


def test_a_username_is_locked_out_after_n_attempts(make_app, database_url, real_redis):
    app = make_app(database_url, IDP_TOKEN_RATE_LIMIT_PER_USER="3/minute")
    client = app.test_client()
    Api(client).user("alice")
    ok = attempt(client, "alice", "alice-pass")
    assert ok.status_code == 200
    assert "Retry-After" not in ok.headers
    assert ok.headers["X-RateLimit-Remaining"] == "2"
    for _ in range(2):
        assert attempt(client, "alice", "wrong").status_code == 401
    assert_limited(attempt(client, "alice", "alice-pass"))  # even the right password now
    assert_limited(attempt(client, "alice", "alice-pass", address="10.0.0.2"))  # from anywhere
    Api(client).user("bob")
    assert attempt(client, "bob", "bob-pass").status_code == 200  # others are not affected


def test_the_address_limit_holds_across_usernames(make_app, sqlite_url, real_redis):
    app = make_app(sqlite_url, IDP_TOKEN_RATE_LIMIT_PER_ADDRESS="4/minute")
    client = app.test_client()
    for i in range(4):
        assert attempt(client, f"user{i}", "guess").status_code == 401
    assert_limited(attempt(client, "user9", "guess"))
    assert attempt(client, "user9", "guess", address="10.0.0.2").status_code == 401


def test_a_lockout_is_audited_without_the_password(make_app, sqlite_url, real_redis, caplog):
    app = make_app(sqlite_url, IDP_TOKEN_RATE_LIMIT_PER_USER="2/minute")
    client = app.test_client()
    password = "Very-Secret-Guess-42"
    caplog.set_level(logging.INFO)
    for _ in range(2):
        attempt(client, "carol", password)
    assert not [r for r in caplog.records if r.name == "idp_app.audit"]
    assert_limited(attempt(client, "carol", password))
    records = [r for r in caplog.records if r.name == "idp_app.audit"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert records[0].levelno == logging.WARNING
    assert "username='carol'" in message
    assert "limit=per_user" in message
    assert "address=10.0.0.1" in message
    assert all(password not in r.getMessage() for r in caplog.records)


def test_limits_are_shared_through_redis(make_app, sqlite_url, real_redis):
    """Two IdP instances (as two processes would) count in the same Redis."""
    config = {
        "IDP_TOKEN_RATE_LIMIT_STORAGE_URI": REDIS_URL,
        "IDP_TOKEN_RATE_LIMIT_PER_USER": "3/minute",
    }
    first = make_app(sqlite_url, **config).test_client()
    second = make_app(sqlite_url, **config).test_client()
    assert attempt(first, "dave", "x").status_code == 401
    assert attempt(first, "dave", "x").status_code == 401
    assert attempt(second, "dave", "x").status_code == 401
    assert_limited(attempt(second, "dave", "x"))
    assert_limited(attempt(first, "dave", "x"))


def test_redis_down_fails_open_to_limits_in_memory(make_app, sqlite_url, real_redis, free_port):
    app = make_app(
        sqlite_url,
        IDP_TOKEN_RATE_LIMIT_STORAGE_URI=f"redis://127.0.0.1:{free_port}/0",
        IDP_TOKEN_RATE_LIMIT_PER_USER="3/minute",
    )
    client = app.test_client()
    Api(client).user("erin")
    assert attempt(client, "erin", "erin-pass").status_code == 200  # login still works
    assert attempt(client, "erin", "wrong").status_code == 401
    assert attempt(client, "erin", "wrong").status_code == 401
    assert_limited(attempt(client, "erin", "erin-pass"))  # and the limit still holds


@pytest.mark.parametrize(("hops", "separate"), [(0, False), (1, True)])
def test_forwarded_addresses_only_behind_a_trusted_proxy(
    make_app, sqlite_url, real_redis, hops, separate
):
    app = make_app(
        sqlite_url, IDP_TOKEN_RATE_LIMIT_PER_ADDRESS="2/minute", IDP_PROXY_FIX_X_FOR=hops
    )
    client = app.test_client()
    for i in range(2):
        r = attempt(client, f"u{i}", "x", headers={"X-Forwarded-For": "203.0.113.7"})
        assert r.status_code == 401
    r = attempt(client, "u9", "x", headers={"X-Forwarded-For": "203.0.113.8"})
    if separate:
        assert r.status_code == 401  # another client behind the proxy
    else:
        assert_limited(r)  # the header is the client's word, not trusted by default


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "IDP_TOKEN_RATE_LIMIT_PER_USER",
            "lots",
            "IDP_TOKEN_RATE_LIMIT_PER_USER must be a rate limit such as '5/minute', got 'lots'",
        ),
        (
            "IDP_TOKEN_RATE_LIMIT_PER_ADDRESS",
            "0/minute",
            "IDP_TOKEN_RATE_LIMIT_PER_ADDRESS must be a rate limit such as '5/minute', "
            "got '0/minute'",
        ),
        (
            "IDP_TOKEN_RATE_LIMIT_PER_USER",
            "",
            "IDP_TOKEN_RATE_LIMIT_PER_USER must be a non-empty string, got ''",
        ),
        ("IDP_PROXY_FIX_X_FOR", -1, "IDP_PROXY_FIX_X_FOR must be a positive integer, got -1"),
        (
            "IDP_TOKEN_RATE_LIMIT_STORAGE_URI",
            5,
            "IDP_TOKEN_RATE_LIMIT_STORAGE_URI must be a URI, got 5",
        ),
    ],
)
def test_bad_rate_limit_settings_name_the_key(make_app, sqlite_url, key, value, message):
    with pytest.raises(ConfigurationError) as info:
        make_app(sqlite_url, **{key: value})
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("url", "uri", "options"),
    [
        ("redis://:pw@h:6379/2", "redis://:pw@h:6379/2", {}),
        ("rediss://h:6380/0", "rediss://h:6380/0", {}),
        ("unix:///run/redis.sock?db=1", "redis+unix:///run/redis.sock?db=1", {}),
        (
            "redis+sentinel://a:26379,b:26379/mymaster/3",
            "redis+sentinel://a:26379,b:26379/mymaster",
            {"db": 3},
        ),
        ("rediss+sentinel://a:26379/mymaster", "redis+sentinel://a:26379/mymaster", {"ssl": True}),
        ("redis+cluster://n1:7000,n2:7001", "redis+cluster://n1:7000,n2:7001", {}),
        ("rediss+cluster://n1:7000", "redis+cluster://n1:7000", {"ssl": True}),
    ],
)
def test_the_idps_redis_url_in_limits_spelling(url, uri, options):
    assert ratelimit.limits_uri(url) == (uri, options)


def test_storage_defaults():
    base = {"RBAC_ABAC_REDIS_URL": "redis://h:1/0", "IDP_REDIS_TIMEOUT": 0.5}
    timeouts = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
    assert ratelimit.storage({**base, "TESTING": True}) == ("memory://", {})
    assert ratelimit.storage(base) == ("redis://h:1/0", timeouts)
    configured = {**base, "TESTING": True, "IDP_TOKEN_RATE_LIMIT_STORAGE_URI": "redis://x:2/1"}
    assert ratelimit.storage(configured) == ("redis://x:2/1", timeouts)

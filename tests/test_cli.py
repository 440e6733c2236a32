"""``flask --app <service> rbac-abac check | refresh | stats`` against the real IdP app.

billing_api (example_service) and the IdP (idp_app, SQLite in tmp_path, seeded with the demo
data) run in this process on the real Redis; the library's HTTP calls to the IdP are routed to
the IdP's test client through `responses`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import responses
from click.testing import Result
from flask import Flask

import idp_app
from example_service import create_app
from tests.conftest import JWT_SECRET, REDIS_URL

pytestmark = pytest.mark.redis

IDP = "http://idp.test"
ADMIN_TOKEN = "admin-token-for-the-cli-tests"
ALICE, DAVE = 1, 4


@pytest.fixture
def idp(tmp_path: Path, real_redis: redis.Redis, key_prefix: str) -> Iterator[Flask]:
    app = idp_app.create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'idp.sqlite3'}",
            "RBAC_ABAC_REDIS_URL": REDIS_URL,
            "RBAC_ABAC_KEY_PREFIX": key_prefix,
            "RBAC_ABAC_CACHE_TTL": 86400,
            "IDP_ADMIN_TOKEN": ADMIN_TOKEN,
            "RBAC_ABAC_JWT_SECRET": JWT_SECRET,
            "IDP_REFRESH_COALESCE_SECONDS": 0,
        }
    )
    runner = app.test_cli_runner()
    assert runner.invoke(args=["init-db"]).exit_code == 0
    token_file = tmp_path / "tokens.json"
    seeded = runner.invoke(args=["seed-demo", "--token-out", str(token_file)])
    assert seeded.exit_code == 0, seeded.output
    app.config["TEST_SERVICE_TOKEN"] = json.loads(token_file.read_text())["billing_api"]
    yield app
    with app.app_context():
        idp_app.db.engine.dispose()  # close pooled SQLite connections (3.13 warns otherwise)


@pytest.fixture
def routed(idp: Flask) -> Iterator[responses.RequestsMock]:
    """Requests to ``IDP`` reach the IdP app; any other URL fails like a closed port."""
    client = idp.test_client()

    def forward(request: Any) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        answer = client.open(
            urlsplit(request.url).path, method=request.method, data=request.body, headers=headers
        )
        return answer.status_code, {"Content-Type": answer.content_type}, answer.get_data()

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in ("GET", "POST"):
            mock.add_callback(method, re.compile(re.escape(IDP) + "/.*"), callback=forward)
        yield mock


@pytest.fixture
def service(idp: Flask, routed: responses.RequestsMock, key_prefix: str) -> Callable[..., Flask]:
    def make(**overrides: Any) -> Flask:
        config = {
            "TESTING": True,
            "IDENTITY_PROVIDER_URL": IDP,
            "RBAC_ABAC_REDIS_URL": idp.config["RBAC_ABAC_REDIS_URL"],
            "RBAC_ABAC_KEY_PREFIX": key_prefix,
            "RBAC_ABAC_SERVICE_TOKEN": idp.config["TEST_SERVICE_TOKEN"],
            "RBAC_ABAC_JWT_SECRET": JWT_SECRET,
            "RBAC_ABAC_CACHE_TTL": 86400,
            "RBAC_ABAC_INVALIDATION": False,
            **overrides,
        }
        return create_app(config)

    return make


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["rbac-abac", *args])


def lines(result: Result) -> list[str]:
    return result.output.splitlines()


# -- check ----------------------------------------------------------------------------------


def test_check_passes_on_a_healthy_deployment(service: Callable[..., Flask]) -> None:
    result = run(service(), "check", "--user-id", str(ALICE))
    assert result.exit_code == 0, result.output
    out = lines(result)
    assert [line[:5] for line in out[:5]] == ["ok   "] * 5
    assert out[0].startswith("ok   Redis reachable at redis://")
    assert re.match(
        r"ok   TTL applied: a written entry expires in 864\d\d s \(configured 86400 s = 24 h\)",
        out[1],
    )
    assert out[2] == f"ok   identity provider reachable at {IDP} (GET /healthz 200)"
    assert out[3].startswith("ok   automatic refresh: evicted ")
    assert "(roles admin; TTL 864" in out[3]
    assert out[4].startswith(f"ok   manual refresh: POST {IDP}/api/refresh-user-cache/ rewrote")
    assert out[5] == "all 5 checks passed for service 'billing_api'"


def test_check_leaves_no_probe_entry(
    service: Callable[..., Flask], real_redis: redis.Redis, key_prefix: str
) -> None:
    assert run(service(), "check", "--user-id", str(ALICE)).exit_code == 0
    keys = {k.decode() for k in real_redis.scan_iter(match=f"{key_prefix}:attrs:*")}
    assert not [k for k in keys if "rbac-abac-check" in k]


def test_ttl_not_applied(service: Callable[..., Flask]) -> None:
    # The service expects 1 h but the identity provider writes 24 h entries.
    result = run(service(RBAC_ABAC_CACHE_TTL=3600), "check", "--user-id", str(ALICE))
    assert result.exit_code == 1
    failed = [line for line in lines(result) if line.startswith("FAIL")]
    assert len(failed) == 2  # automatic and manual refresh
    assert "this service expects 3600 s" in failed[0]
    assert "(hint: TTL not applied: verify RBAC_ABAC_CACHE_TTL" in failed[0]
    assert lines(result)[-1] == "2 of 5 checks failed"


def test_service_manifest_not_registered(service: Callable[..., Flask]) -> None:
    app = service(SERVICE_NAME="shipping_api", RBAC_ABAC_SERVICE_TOKEN=ADMIN_TOKEN)
    result = run(app, "check", "--user-id", str(ALICE))
    assert result.exit_code == 1
    failed = [line for line in lines(result) if line.startswith("FAIL")]
    assert len(failed) == 2
    for line in failed:
        assert "service 'shipping_api' is not registered" in line
        assert "(hint: service manifest not registered: register 'shipping_api'" in line


def test_user_without_roles(service: Callable[..., Flask]) -> None:
    result = run(service(), "check", "--user-id", str(DAVE))
    assert result.exit_code == 1
    failed = [line for line in lines(result) if line.startswith("FAIL")]
    assert len(failed) == 2
    # A user without a role is unknown to the service (issue 7): the IdP answers 404.
    assert failed[0].startswith(f"FAIL automatic refresh of user {DAVE} found nothing")
    assert f"(hint: user {DAVE} is unknown to this service at the identity provider" in failed[0]


def test_unknown_user(service: Callable[..., Flask]) -> None:
    result = run(service(), "check", "--user-id", "999")
    assert result.exit_code == 1
    assert "(hint: user 999 is unknown to this service at the identity provider" in result.output


def test_wrong_token(service: Callable[..., Flask]) -> None:
    result = run(service(RBAC_ABAC_SERVICE_TOKEN="not-the-token"), "check", "--user-id", "1")
    assert result.exit_code == 1
    assert "(hint: the identity provider refused this service's token" in result.output


def test_wrong_identity_provider_url(
    service: Callable[..., Flask], routed: responses.RequestsMock
) -> None:
    # Something answers there (a web server's HTML 404s), but it is not the IdP.
    other = "http://www.example.test"
    routed.add("GET", other + "/healthz", body="<h1>Not Found</h1>", status=404)
    routed.add("POST", other + "/api/refresh-user-cache/", body="<h1>Not Found</h1>", status=404)
    result = run(service(IDENTITY_PROVIDER_URL=other), "check", "--user-id", "1")
    assert result.exit_code == 1
    failed = [line for line in lines(result) if line.startswith("FAIL")]
    assert len(failed) == 3  # reachability, automatic and manual refresh
    for line in failed:
        assert f"(hint: wrong IDENTITY_PROVIDER_URL ({other})" in line


def test_unreachable_identity_provider(service: Callable[..., Flask]) -> None:
    nowhere = "http://127.0.0.1:9"
    result = run(service(IDENTITY_PROVIDER_URL=nowhere), "check", "--user-id", "1")
    assert result.exit_code == 1
    out = lines(result)
    assert out[0].startswith("ok   Redis reachable")
    assert out[1].startswith("ok   TTL applied")
    for line in out[2:5]:
        assert line.startswith("FAIL")
        assert f"(hint: identity provider unreachable at {nowhere}: check" in line


def test_redis_unreachable(service: Callable[..., Flask], free_port: int) -> None:
    url = f"redis://127.0.0.1:{free_port}/0"
    result = run(service(RBAC_ABAC_REDIS_URL=url), "check", "--user-id", "1")
    assert result.exit_code == 1
    out = lines(result)
    assert out[0].startswith("FAIL Redis unreachable")
    assert out[0].endswith(f"(hint: check RBAC_ABAC_REDIS_URL ({url}) and that Redis is running "
                           "and reachable from here)")  # fmt: skip
    assert out[1].startswith("FAIL could not write a probe entry")


def test_check_needs_a_valid_user_id(service: Callable[..., Flask]) -> None:
    assert run(service(), "check").exit_code == 2
    result = run(service(), "check", "--user-id", "a:b")
    assert result.exit_code == 2
    assert "invalid user_id" in result.output


# -- refresh and stats ----------------------------------------------------------------------


def test_refresh_prints_the_entry(service: Callable[..., Flask], key_prefix: str) -> None:
    result = run(service(), "refresh", str(ALICE))
    assert result.exit_code == 0, result.output
    entry = json.loads(result.output)
    assert entry["key"] == f"{key_prefix}:attrs:billing_api:{ALICE}"
    assert entry["roles"] == ["admin"]
    assert entry["attributes"] == {"department": "finance", "clearance": 5}


def test_refresh_of_an_unknown_user_fails(service: Callable[..., Flask]) -> None:
    result = run(service(), "refresh", "999")
    assert result.exit_code == 1
    assert "user 999 is unknown to this service" in result.output


def test_refresh_with_an_unreachable_idp_fails_with_a_hint(service: Callable[..., Flask]) -> None:
    result = run(service(IDENTITY_PROVIDER_URL="http://127.0.0.1:9"), "refresh", "1")
    assert result.exit_code == 1
    assert "identity provider unreachable" in result.output


def test_stats_is_json(service: Callable[..., Flask]) -> None:
    result = run(service(), "stats")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    for name in ("l1_hits", "l2_hits", "auto_refreshes", "manual_refreshes", "idp_errors"):
        assert stats[name] == 0

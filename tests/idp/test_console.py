"""The admin console through Flask's test client, on SQLite and PostgreSQL with real Redis.

The browser test (tests/e2e/test_console_browser.py) drives the same pages in Chromium against
real processes; here each rule is checked exactly: the sign-in gate, CSRF, cookie flags, expiry,
and that every change goes through the operations (Redis and the refresh endpoint see it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import Result

from flask_rbac_abac.shared import attributes_key
from idp_app import audit, db
from idp_app.console.signin import create_admin

from .conftest import Api

SECRET = "console-secret-for-the-tests-0123456789"
ADMIN_USER = "root-admin"
ADMIN_PASSWORD = "correct horse battery"
USER_LINK = re.compile(rb'href="/admin/users/\d+"')


def csrf_of(page: bytes) -> str:
    found = re.search(rb'name="csrf_token" value="([^"]+)"', page)
    assert found is not None, page[:500]
    return found.group(1).decode()


class Console:
    """A signed-in browser, as far as the test client goes."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.token = ""

    def sign_in(self, password: str = ADMIN_PASSWORD) -> Any:
        page = self.client.get("/admin/sign-in")
        response = self.client.post(
            "/admin/sign-in",
            data={"username": ADMIN_USER, "password": password, "csrf_token": csrf_of(page.data)},
        )
        if response.status_code == 302:
            self.token = csrf_of(self.client.get("/admin/").data)
        return response

    def post(self, path: str, **form: Any) -> Any:
        return self.client.post(path, data={"csrf_token": self.token, **form})


@pytest.fixture
def console_app(make_app: Callable[..., Any], database_url: str, real_redis: Any) -> Any:
    app = make_app(database_url, SECRET_KEY=SECRET)
    with app.app_context():
        create_admin(ADMIN_USER, ADMIN_PASSWORD)
        db.session.commit()
    return app


@pytest.fixture
def console(console_app: Any) -> Console:
    console = Console(console_app.test_client())
    assert console.sign_in().status_code == 302
    return console


@pytest.fixture
def api_of(console_app: Any) -> Api:
    return Api(console_app.test_client())


@pytest.mark.parametrize("path", ["/admin/", "/admin/users/", "/admin/users/1", "/admin/services/"])
def test_signed_out_is_sent_to_sign_in(console_app: Any, path: str) -> None:
    response = console_app.test_client().get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/sign-in?next=")


def test_signed_out_post_is_refused(console_app: Any, api_of: Api) -> None:
    api_of.service()
    user_id = api_of.user("carol")
    client = console_app.test_client()
    token = csrf_of(client.get("/admin/sign-in").data)
    response = client.post(f"/admin/users/{user_id}/deactivate", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/sign-in")


def test_wrong_password_is_refused(console_app: Any) -> None:
    response = Console(console_app.test_client()).sign_in("wrong password")
    assert response.status_code == 401
    assert b"invalid username or password" in response.data


def test_sign_in_sets_a_strict_cookie_and_sign_out_ends_it(console_app: Any) -> None:
    console = Console(console_app.test_client())
    response = console.sign_in()
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # TESTING, not configured: off
    assert "Expires=" in cookie
    page = console.client.get("/admin/")
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert console.post("/admin/sign-out").status_code == 302
    assert console.client.get("/admin/").status_code == 302


def test_secure_cookie_when_configured(make_app: Callable[..., Any], sqlite_url: str) -> None:
    app = make_app(sqlite_url, SECRET_KEY=SECRET, IDP_CONSOLE_SECURE_COOKIES="true")
    with app.app_context():
        create_admin(ADMIN_USER, ADMIN_PASSWORD)
        db.session.commit()
    response = Console(app.test_client()).sign_in()
    assert "Secure" in response.headers["Set-Cookie"]


def test_session_expires(make_app: Callable[..., Any], sqlite_url: str) -> None:
    app = make_app(sqlite_url, SECRET_KEY=SECRET, IDP_CONSOLE_SESSION_LIFETIME=1)
    with app.app_context():
        create_admin(ADMIN_USER, ADMIN_PASSWORD)
        db.session.commit()
    console = Console(app.test_client())
    assert console.sign_in().status_code == 302
    time.sleep(2.1)
    assert console.client.get("/admin/users/").status_code == 302


@pytest.mark.parametrize("token", [None, "forged"])
def test_form_without_csrf_token_is_refused(
    console: Console, api_of: Api, token: str | None
) -> None:
    api_of.service()
    user_id = api_of.user("carol")
    data = {} if token is None else {"csrf_token": token}
    response = console.client.post(f"/admin/users/{user_id}/deactivate", data=data)
    assert response.status_code == 400
    assert b"Request refused" in response.data
    assert api_of.refresh(user_id).status_code in (404, 200)  # untouched either way
    detail = console.client.get(f"/admin/users/{user_id}")
    assert b'id="status">active<' in detail.data


def test_api_stays_csrf_exempt(console_app: Any, api_of: Api) -> None:
    assert api_of.service()  # POST /api/services/ with the admin token, no CSRF token


def test_console_off_without_secret(make_app: Callable[..., Any], sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    response = app.test_client().get("/admin/")
    assert response.status_code == 503
    assert b"SECRET_KEY" in response.data


def test_search_and_pages(console: Console, api_of: Api) -> None:
    api_of.service()
    ids = [api_of.user(f"user{n:02d}") for n in range(30)]
    api_of.user("someone-else")
    first = console.client.get("/admin/users/?q=user")
    assert first.status_code == 200
    assert len(USER_LINK.findall(first.data)) == 25
    cursor = re.search(rb'id="next-page" href="[^"]*cursor=([^"&]+)"', first.data)
    assert cursor is not None
    second = console.client.get(f"/admin/users/?q=user&cursor={cursor.group(1).decode()}")
    assert len(USER_LINK.findall(second.data)) == 5
    assert b"someone-else" not in first.data + second.data
    assert f'href="/admin/users/{ids[-1]}"'.encode() in second.data
    assert b'id="next-page"' not in second.data


def test_roles_change_reaches_redis_and_refresh(console: Console, api_of: Api) -> None:
    api_of.service()
    user_id = api_of.user("carol")
    api_of.roles(user_id, ["admin", "viewer"])
    response = console.post(f"/admin/users/{user_id}/roles/billing_api", roles=["viewer"])
    assert response.status_code == 302
    refreshed = api_of.refresh(user_id)
    assert refreshed.status_code == 200
    assert refreshed.get_json()["attributes"]["roles"] == ["viewer"]
    page = console.client.get(f"/admin/users/{user_id}")
    assert b"roles in billing_api saved" in page.data
    assert b"roles viewer" in page.data  # the Redis entry the cache table shows

    assert console.post(f"/admin/users/{user_id}/roles/billing_api/remove").status_code == 302
    assert api_of.refresh(user_id).status_code == 404


def test_unknown_role_is_refused_with_its_name(console: Console, api_of: Api) -> None:
    api_of.service()
    user_id = api_of.user("carol")
    console.post(f"/admin/users/{user_id}/roles/billing_api", roles=["pilot"])
    page = console.client.get(f"/admin/users/{user_id}")
    assert b"unknown role(s) for service &#39;billing_api&#39;: pilot" in page.data


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", b"attributes are not valid JSON"),
        ("[1, 2]", b"attributes must be a JSON object"),
    ],
)
def test_bad_attributes_json_says_why(
    console: Console, api_of: Api, text: str, message: bytes
) -> None:
    api_of.service()
    user_id = api_of.user("carol", {"department": "finance"})
    console.post(f"/admin/users/{user_id}/attributes", attributes=text)
    page = console.client.get(f"/admin/users/{user_id}")
    assert message in page.data
    assert b"&#34;department&#34;: &#34;finance&#34;" in page.data


def test_attributes_are_replaced(console: Console, api_of: Api) -> None:
    api_of.service()
    user_id = api_of.user("carol", {"department": "finance", "clearance": 2})
    api_of.roles(user_id, ["viewer"])
    console.post(f"/admin/users/{user_id}/attributes", attributes='{"clearance": 5}')
    body = api_of.refresh(user_id).get_json()
    assert body["attributes"]["attributes"] == {"clearance": 5}


def test_deactivate_and_activate(console: Console, api_of: Api) -> None:
    api_of.service()
    user_id = api_of.user("carol")
    api_of.roles(user_id, ["viewer"])
    assert console.post(f"/admin/users/{user_id}/deactivate").status_code == 302
    assert api_of.refresh(user_id).status_code == 404
    assert console.post(f"/admin/users/{user_id}/activate").status_code == 302
    assert api_of.refresh(user_id).status_code == 200


def test_cache_invalidate_and_refresh_now(
    console: Console, api_of: Api, real_redis: Any, console_app: Any
) -> None:
    api_of.service()
    user_id = api_of.user("carol")
    api_of.roles(user_id, ["viewer"])
    prefix = console_app.config["RBAC_ABAC_KEY_PREFIX"]
    key = attributes_key(prefix, "billing_api", user_id)
    assert real_redis.exists(key) == 1
    console.post(f"/admin/users/{user_id}/cache/billing_api/invalidate")
    assert real_redis.exists(key) == 0
    assert b"absent" in console.client.get(f"/admin/users/{user_id}").data
    console.post(f"/admin/users/{user_id}/cache/billing_api/refresh")
    assert real_redis.exists(key) == 1
    assert 0 < real_redis.ttl(key) <= console_app.config["RBAC_ABAC_CACHE_TTL"]
    # Neither is an operation of the API, so the console audits both itself, once each.
    with console_app.app_context():
        entries, _ = audit.list_entries(user_id, 50, None)
    actions = [(e.action, e.actor, e.target) for e in entries if e.action.startswith("cache_")]
    assert sorted(actions) == [
        ("cache_invalidate", f"console:{ADMIN_USER}", "billing_api"),
        ("cache_refresh", f"console:{ADMIN_USER}", "billing_api"),
    ]


def test_service_create_token_once_rotate_and_revoke(console: Console, console_app: Any) -> None:
    created = console.post("/admin/services/", name="reports", roles='{"reader": ["report:read"]}')
    assert created.status_code == 200
    token = re.search(rb'id="new-token">(svc_[^<]+)<', created.data)
    assert token is not None
    again = console.client.get("/admin/services/reports")
    assert token.group(1) not in again.data  # shown once
    api = console_app.test_client()
    headers = {"Authorization": f"Bearer {token.group(1).decode()}"}
    assert (
        api.post(
            "/api/refresh-user-cache/",
            json={"user_id": 1, "service_name": "reports"},
            headers=headers,
        ).status_code
        == 404
    )

    second = console.post("/admin/services/reports/tokens")
    assert re.search(rb'id="new-token">svc_', second.data)
    ids = [int(i) for i in re.findall(rb'id="revoke-(\d+)"', second.data)]
    assert len(ids) == 2
    console.post(f"/admin/services/reports/tokens/{ids[0]}/revoke")
    assert (
        api.post(
            "/api/refresh-user-cache/",
            json={"user_id": 1, "service_name": "reports"},
            headers=headers,
        ).status_code
        == 401
    )


def test_manifest_edit_and_bad_manifest(console: Console, api_of: Api) -> None:
    api_of.service()
    user_id = api_of.user("carol")
    api_of.roles(user_id, ["viewer"])
    console.post(
        "/admin/services/billing_api/manifest",
        roles='{"viewer": ["invoice:read", "report:read"]}',
        attributes="null",
    )
    permissions = api_of.refresh(user_id).get_json()["attributes"]["permissions"]
    assert sorted(permissions) == ["invoice:read", "report:read"]
    console.post("/admin/services/billing_api/manifest", roles='{"viewer": "x"}', attributes="null")
    page = console.client.get("/admin/services/billing_api")
    assert b"permissions must be a list" in page.data


def test_dashboard(console: Console, api_of: Api) -> None:
    api_of.service()
    api_of.user("carol")
    page = console.client.get("/admin/")
    assert b'id="count-users">1<' in page.data
    assert b'id="count-services">1<' in page.data
    assert b'id="backlog">0 row(s)<' in page.data
    assert b'id="database" class="ok">ok<' in page.data
    assert b'id="redis" class="ok">ok<' in page.data
    assert b'id="refreshes">n/a<' in page.data


def test_create_admin_command(console_app: Any) -> None:
    runner = console_app.test_cli_runner()
    result: Result = runner.invoke(args=["create-admin", "ops", "--password", "long enough pw"])
    assert result.exit_code == 0, result.output
    assert "created console admin ops" in result.output
    again = runner.invoke(args=["create-admin", "ops", "--password", "long enough pw"])
    assert again.exit_code == 1
    assert "console admin 'ops' already exists" in again.output


def test_sign_out_ends_a_copied_session_too(console_app: Any) -> None:
    console = Console(console_app.test_client())
    assert console.sign_in().status_code == 302
    copy = console_app.test_client()
    cookie = console.client.get_cookie("idp_console")
    assert cookie is not None
    copy.set_cookie("idp_console", cookie.value)
    assert copy.get("/admin/").status_code == 200
    time.sleep(0.01)
    assert console.post("/admin/sign-out").status_code == 302
    assert copy.get("/admin/").status_code == 302


def test_sign_in_redirects_only_inside_the_console(console_app: Any) -> None:
    client = console_app.test_client()
    token = csrf_of(client.get("/admin/sign-in").data)
    response = client.post(
        "/admin/sign-in?next=//evil.example/admin/",
        data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"

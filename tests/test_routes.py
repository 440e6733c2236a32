"""No forgotten route: the route guard, misplaced rule decorators and ``rbac-abac routes``."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from flask import Blueprint, Flask, jsonify
from flask.views import MethodView, View

from flask_rbac_abac import (
    RBACABAC,
    ConfigurationError,
    enforce,
    permission,
    public,
    requires,
    requires_permission,
    requires_role,
    role,
)
from flask_rbac_abac.routes import Protection, classify

from .conftest import FakeIdP, bearer, library_config

ADMIN, VIEWER = 1, 2
NO_RULE = {"success": False, "error": "this view has no authorization rule", "reason": "no_rule"}
MISPLACED = {
    "success": False,
    "error": "this view's authorization rule is misplaced and never runs",
    "reason": "misplaced_rule",
}


class Invoices(MethodView):
    """Rules per method: GET needs a role, DELETE has none."""

    @requires_role("admin", "viewer")
    def get(self) -> Any:
        return jsonify(view="invoices")

    def delete(self) -> Any:
        return jsonify(deleted=True)


class Guarded(MethodView):
    decorators: ClassVar[list[Callable[..., Any]]] = [requires_role("admin")]

    def get(self) -> Any:
        return jsonify(view="guarded")


@public
class Status(View):
    def dispatch_request(self) -> Any:
        return jsonify(view="status")


class Plain(View):
    def dispatch_request(self) -> Any:
        return jsonify(view="plain")


def passthrough(view: Callable[..., Any]) -> Callable[..., Any]:
    """Some other decorator (a cache, a rate limit) made with ``functools.wraps``."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return view(*args, **kwargs)

    return wrapper


def build(key_prefix: str, idp: FakeIdP, static: Path | None = None, **config: Any) -> Flask:
    """An app with one view of each kind: ruled, public, forgotten, misplaced, class-based."""
    app = Flask(__name__, static_folder=static, static_url_path="/static")
    app.config.update(library_config(key_prefix, **config))
    RBACABAC(app, redis=idp.client)

    @app.get("/ruled")
    @requires_permission("invoice:read")
    def ruled() -> Any:
        return jsonify(view="ruled")

    @app.get("/open")
    @public
    def open_view() -> Any:
        return jsonify(view="open")

    @app.route("/forgotten", methods=["GET", "POST"])
    def forgotten() -> Any:
        return jsonify(view="forgotten")

    @requires_role("admin")
    @app.get("/misplaced")
    def misplaced() -> Any:
        return jsonify(view="misplaced")

    @requires_role("admin")
    @passthrough
    @app.get("/misplaced-over-another-decorator")
    def misplaced_over_another_decorator() -> Any:
        return jsonify(view="misplaced-over-another-decorator")

    @requires_role("admin")
    @app.get("/misplaced-over-a-rule")
    @requires_permission("invoice:read")
    def misplaced_over_a_rule() -> Any:
        return jsonify(view="misplaced-over-a-rule")

    @app.get("/checked-inside")
    @public
    def checked_inside() -> Any:
        enforce(role("admin"))
        return jsonify(view="checked-inside")

    bp = Blueprint("bp", __name__, url_prefix="/bp")

    @bp.get("/ruled")
    @requires_role("admin")
    def bp_ruled() -> Any:
        return jsonify(view="bp.ruled")

    @bp.get("/open")
    @public
    def bp_open() -> Any:
        return jsonify(view="bp.open")

    @bp.get("/forgotten")
    def bp_forgotten() -> Any:
        return jsonify(view="bp.forgotten")

    @requires_role("admin")
    @bp.get("/misplaced")
    def bp_misplaced() -> Any:
        return jsonify(view="bp.misplaced")

    app.register_blueprint(bp)
    app.add_url_rule("/invoices", view_func=Invoices.as_view("invoices"))
    app.add_url_rule("/guarded", view_func=Guarded.as_view("guarded"))
    app.add_url_rule("/status", view_func=Status.as_view("status"))
    app.add_url_rule("/plain", view_func=Plain.as_view("plain"))
    return app


@pytest.fixture
def fake_users(fake_idp: FakeIdP) -> FakeIdP:
    fake_idp.add(ADMIN, roles=["admin"], permissions=["invoice:read"])
    fake_idp.add(VIEWER, roles=["viewer"], permissions=[])
    return fake_idp


@pytest.fixture
def guarded(key_prefix: str, fake_users: FakeIdP) -> Iterator[Flask]:
    app = build(key_prefix, fake_users, RBAC_ABAC_REQUIRE_AUTHORIZATION=True)
    yield app
    with app.app_context():
        app.extensions["rbac_abac"].close(app)


@pytest.fixture
def unguarded(key_prefix: str, fake_users: FakeIdP) -> Iterator[Flask]:
    app = build(key_prefix, fake_users)
    yield app
    with app.app_context():
        app.extensions["rbac_abac"].close(app)


# -- a rule decorator above the route decorator: refused whatever the configuration --------


@pytest.mark.parametrize("app_fixture", ["guarded", "unguarded"])
@pytest.mark.parametrize(
    "path",
    ["/misplaced", "/misplaced-over-a-rule", "/misplaced-over-another-decorator", "/bp/misplaced"],
)
def test_a_misplaced_rule_is_refused_never_served(request, app_fixture, path) -> None:
    client = request.getfixturevalue(app_fixture).test_client()
    for headers in ({}, bearer(ADMIN), bearer(VIEWER)):
        response = client.get(path, headers=headers)
        assert (response.status_code, response.json) == (403, MISPLACED)


def test_a_misplaced_rule_is_logged_by_name_at_the_first_request(unguarded, caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="flask_rbac_abac"):
        assert unguarded.test_client().get("/ruled").status_code == 401
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 4
    assert any(
        "view tests.test_routes.build.<locals>.misplaced (endpoint 'misplaced') is registered "
        "without its rule: the rule decorator is above the route decorator" in e
        for e in errors
    )
    assert any("(endpoint 'bp.bp_misplaced')" in e for e in errors)
    assert any("(endpoint 'misplaced_over_a_rule')" in e for e in errors)
    assert any("(endpoint 'misplaced_over_another_decorator')" in e for e in errors)


def test_the_refusal_is_counted_and_audited(unguarded, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="flask_rbac_abac.audit"):
        unguarded.test_client().get("/misplaced")
    assert "deny user=None service=billing_api endpoint=misplaced code=misplaced_rule" in (
        caplog.text
    )
    with unguarded.app_context():
        assert unguarded.extensions["rbac_abac"].stats()["denied"] == 1


# -- RBAC_ABAC_REQUIRE_AUTHORIZATION ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/forgotten", "/bp/forgotten", "/plain"])
def test_with_the_guard_a_view_without_rule_or_public_is_refused(guarded, path) -> None:
    client = guarded.test_client()
    for headers in ({}, bearer(ADMIN)):
        response = client.get(path, headers=headers)
        assert (response.status_code, response.json) == (403, NO_RULE)
    assert client.post("/forgotten", headers=bearer(ADMIN)).json == NO_RULE


def test_without_the_guard_a_view_without_rule_is_served(unguarded) -> None:
    client = unguarded.test_client()
    for path, name in [
        ("/forgotten", "forgotten"),
        ("/bp/forgotten", "bp.forgotten"),
        ("/plain", "plain"),
        ("/invoices", None),
    ]:
        if name is None:
            assert client.delete(path).json == {"deleted": True}
        else:
            assert client.get(path).json == {"view": name}


@pytest.mark.parametrize(
    ("path", "view"),
    [("/open", "open"), ("/bp/open", "bp.open"), ("/status", "status")],
)
def test_with_the_guard_public_views_need_nothing(guarded, path, view) -> None:
    response = guarded.test_client().get(path)
    assert (response.status_code, response.json) == (200, {"view": view})


@pytest.mark.parametrize(
    ("path", "view"),
    [
        ("/ruled", "ruled"),
        ("/bp/ruled", "bp.ruled"),
        ("/guarded", "guarded"),
        ("/invoices", "invoices"),
    ],
)
def test_with_the_guard_ruled_views_work_as_before(guarded, path, view) -> None:
    client = guarded.test_client()
    assert client.get(path).status_code == 401
    response = client.get(path, headers=bearer(ADMIN))
    assert (response.status_code, response.json) == (200, {"view": view})


def test_with_the_guard_rules_per_method_of_a_method_view(guarded) -> None:
    client = guarded.test_client()
    assert client.get("/invoices", headers=bearer(VIEWER)).status_code == 200
    assert client.head("/invoices", headers=bearer(VIEWER)).status_code == 200
    response = client.delete("/invoices", headers=bearer(ADMIN))
    assert (response.status_code, response.json) == (403, NO_RULE)


def test_a_view_that_checks_inside_and_is_public_still_checks(guarded) -> None:
    client = guarded.test_client()
    assert client.get("/checked-inside").status_code == 401
    assert client.get("/checked-inside", headers=bearer(VIEWER)).json["reason"] == "missing_role"
    assert client.get("/checked-inside", headers=bearer(ADMIN)).status_code == 200


def test_the_guard_leaves_options_static_files_404_and_405_alone(
    key_prefix, fake_users, tmp_path
) -> None:
    (tmp_path / "logo.txt").write_text("logo")
    app = build(key_prefix, fake_users, static=tmp_path, RBAC_ABAC_REQUIRE_AUTHORIZATION=True)
    assets = Blueprint("assets", __name__, static_folder=tmp_path, url_prefix="/assets")
    app.register_blueprint(assets)
    client = app.test_client()
    with client.get(f"/assets/{tmp_path.name}/logo.txt") as static:
        assert (static.status_code, static.data) == (200, b"logo")
    assert client.options("/forgotten").status_code == 200
    assert client.options("/misplaced").status_code == 200
    static = client.get("/static/logo.txt")
    assert (static.status_code, static.data) == (200, b"logo")
    static.close()
    assert client.get("/nowhere").status_code == 404
    assert client.delete("/forgotten").status_code == 405
    assert client.put("/ruled", headers=bearer(ADMIN)).status_code == 405


def test_a_rule_under_another_decorator_is_in_place(key_prefix, fake_users) -> None:
    app = clean_app(key_prefix, fake_users, RBAC_ABAC_REQUIRE_AUTHORIZATION=True)

    @app.get("/c")
    @passthrough
    @requires_role("admin")
    def c() -> Any:
        return jsonify(view="c")

    client = app.test_client()
    assert client.get("/c").status_code == 401
    assert client.get("/c", headers=bearer(VIEWER)).json["reason"] == "missing_role"
    assert client.get("/c", headers=bearer(ADMIN)).json == {"view": "c"}
    assert routes(app)[0] == 0


def test_a_view_replaced_after_the_first_request_is_judged_again(guarded) -> None:
    client = guarded.test_client()
    assert client.get("/forgotten").json == NO_RULE
    guarded.view_functions["forgotten"] = requires_role("admin")(lambda: jsonify(view="now"))
    assert client.get("/forgotten").status_code == 401
    assert client.get("/forgotten", headers=bearer(ADMIN)).json == {"view": "now"}
    guarded.view_functions["forgotten"] = public(lambda: jsonify(view="open now"))
    assert client.get("/forgotten").json == {"view": "open now"}


def test_two_apps_one_guarded_one_not(key_prefix, fake_users) -> None:
    rbac = RBACABAC()
    apps = []
    for required in (True, False):
        app = Flask(__name__)
        app.config.update(library_config(key_prefix, RBAC_ABAC_REQUIRE_AUTHORIZATION=required))
        rbac.init_app(app, redis=fake_users.client)
        app.add_url_rule("/x", view_func=lambda: jsonify(ok=True))
        apps.append(app)
    assert apps[0].test_client().get("/x").json == NO_RULE
    assert apps[1].test_client().get("/x").json == {"ok": True}


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("1", True), ("off", False), (True, True)]
)
def test_the_setting_reads_booleans_and_the_environment(
    key_prefix, fake_users, monkeypatch, value, expected
) -> None:
    monkeypatch.setenv("RBAC_ABAC_REQUIRE_AUTHORIZATION", str(value))
    app = Flask(__name__)
    app.config.update(library_config(key_prefix))
    RBACABAC(app, redis=fake_users.client)
    with app.app_context():
        assert app.extensions["rbac_abac"].settings.require_authorization is expected


def test_the_setting_is_off_by_default_and_validated(key_prefix, fake_users) -> None:
    app = Flask(__name__)
    app.config.update(library_config(key_prefix))
    RBACABAC(app, redis=fake_users.client)
    assert app.config["RBAC_ABAC_REQUIRE_AUTHORIZATION"] is False
    bad = Flask(__name__)
    bad.config.update(library_config(key_prefix, RBAC_ABAC_REQUIRE_AUTHORIZATION="sometimes"))
    with pytest.raises(
        ConfigurationError,
        match="RBAC_ABAC_REQUIRE_AUTHORIZATION must be a boolean, got 'sometimes'",
    ):
        RBACABAC(bad, redis=fake_users.client)


def test_classify_directly() -> None:
    def bare() -> None: ...

    wrapped_elsewhere = requires(role("x"))(bare)
    assert classify("bare", bare, "GET").kind is Protection.MISPLACED
    assert classify("w", wrapped_elsewhere, "GET").rules[0].names == ("x",)
    assert classify("none", None, "GET").kind is Protection.UNPROTECTED
    assert classify("static", bare, "GET").kind is Protection.MISPLACED  # not Flask's


# -- flask rbac-abac routes ------------------------------------------------------------------


def routes(app: Flask, *args: str) -> tuple[int, list[str]]:
    result = app.test_cli_runner().invoke(args=["rbac-abac", "routes", *args])
    return result.exit_code, result.output.splitlines()


def test_routes_lists_every_route_with_its_protection(guarded) -> None:
    code, lines = routes(guarded)
    assert code == 1
    table = {tuple(line.split(None, 3)[:3]): line.split(None, 3)[3] for line in lines[:-1]}
    assert table == {
        ("GET", "/bp/forgotten", "bp.bp_forgotten"): "UNPROTECTED",
        ("GET", "/bp/misplaced", "bp.bp_misplaced"): "MISPLACED RULE (the rule decorator is "
        "above the route decorator, so it never runs; the route is refused)",
        ("GET", "/bp/open", "bp.bp_open"): "public",
        ("GET", "/bp/ruled", "bp.bp_ruled"): "role('admin')",
        ("GET", "/checked-inside", "checked_inside"): "public",
        ("GET,POST", "/forgotten", "forgotten"): "UNPROTECTED",
        ("GET", "/guarded", "guarded"): "role('admin')",
        ("GET", "/invoices", "invoices"): "role('admin', 'viewer')",
        ("DELETE", "/invoices", "invoices"): "UNPROTECTED",
        ("GET", "/misplaced", "misplaced"): "MISPLACED RULE (the rule decorator is above the "
        "route decorator, so it never runs; the route is refused)",
        ("GET", "/misplaced-over-a-rule", "misplaced_over_a_rule"): "MISPLACED RULE (the rule "
        "decorator is above the route decorator, so it never runs; the route is refused)",
        (
            "GET",
            "/misplaced-over-another-decorator",
            "misplaced_over_another_decorator",
        ): "MISPLACED"
        " RULE (the rule decorator is above the route decorator, so it never runs; the route is "
        "refused)",
        ("GET", "/open", "open_view"): "public",
        ("GET", "/plain", "plain"): "UNPROTECTED",
        ("GET", "/ruled", "ruled"): "permission('invoice:read')",
        ("GET", "/status", "status"): "public",
    }
    assert lines[-1] == "16 routes: 4 protected, 4 public, 4 unprotected, 4 misplaced, 0 static"


def clean_app(key_prefix: str, idp: FakeIdP, **config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(library_config(key_prefix, **config))
    RBACABAC(app, redis=idp.client)
    app.add_url_rule("/a", "a", requires_role("admin")(lambda: "a"))
    app.add_url_rule("/b", "b", public(lambda: "b"))
    return app


def test_routes_passes_when_every_view_is_ruled_or_public(key_prefix, fake_users) -> None:
    code, lines = routes(clean_app(key_prefix, fake_users, RBAC_ABAC_REQUIRE_AUTHORIZATION=True))
    assert code == 0
    assert lines[-1] == "3 routes: 1 protected, 1 public, 0 unprotected, 0 misplaced, 1 static"


def test_routes_fails_on_an_unprotected_view_only_when_the_guard_is_on(
    key_prefix, fake_users
) -> None:
    app = clean_app(key_prefix, fake_users)
    app.add_url_rule("/c", "c", lambda: "c")
    code, lines = routes(app)
    assert code == 0
    assert lines[-1] == (
        "4 routes: 1 protected, 1 public, 1 unprotected, 0 misplaced, 1 static "
        "(RBAC_ABAC_REQUIRE_AUTHORIZATION is off)"
    )
    assert routes(app, "--strict")[0] == 1
    guarded = clean_app(key_prefix, fake_users, RBAC_ABAC_REQUIRE_AUTHORIZATION=True)
    guarded.add_url_rule("/c", "c", lambda: "c")
    assert routes(guarded)[0] == 1


def test_routes_fails_on_a_misplaced_rule_even_without_the_guard(key_prefix, fake_users) -> None:
    app = clean_app(key_prefix, fake_users)

    @requires_role("admin")
    @app.get("/oops")
    def oops() -> str:
        return "oops"

    code, lines = routes(app)
    assert code == 1
    assert lines[-1].startswith("4 routes: 1 protected, 1 public, 0 unprotected, 1 misplaced")


def test_routes_shows_static_files_as_not_guarded(key_prefix, fake_users, tmp_path) -> None:
    app = Flask(__name__, static_folder=tmp_path, static_url_path="/static")
    bp = Blueprint(
        "assets", __name__, static_folder=tmp_path, static_url_path="/files", url_prefix="/assets"
    )
    app.register_blueprint(bp)
    app.config.update(library_config(key_prefix, RBAC_ABAC_REQUIRE_AUTHORIZATION=True))
    RBACABAC(app, redis=fake_users.client)
    code, lines = routes(app)
    assert code == 0
    assert [line.split() for line in lines[:2]] == [
        [
            "GET",
            "/assets/files/<path:filename>",
            "assets.static",
            "static",
            "files",
            "(not",
            "guarded)",
        ],
        ["GET", "/static/<path:filename>", "static", "static", "files", "(not", "guarded)"],
    ]


def test_an_open_route_runs_nothing_of_the_extension_per_request(unguarded) -> None:
    """No before-request hook, and the first request's judging disconnects itself: a route
    without a rule costs what it costs without the extension."""
    from flask import request_started

    assert not any(unguarded.before_request_funcs.values())
    client = unguarded.test_client()
    assert client.get("/ruled").status_code == 401  # judged at this first request
    assert list(request_started.receivers_for(unguarded)) == []  # nothing left for this app
    assert unguarded.view_functions["open_view"] is unguarded.view_functions.get("open_view")
    misplaced = unguarded.view_functions[
        "misplaced"
    ]  # refused: stored wrapped, get() is as registered
    assert misplaced is not unguarded.view_functions.get("misplaced")


def test_routes_lists_every_rule_of_stacked_decorators(
    key_prefix: str, fake_users: FakeIdP
) -> None:
    app = clean_app(key_prefix, fake_users)

    @app.get("/stacked")
    @requires(role("admin"))
    @requires(permission("invoice:read"))
    def stacked() -> str:
        return "ok"

    code, lines = routes(app)
    assert code == 0
    listed = {line.split(None, 3)[1]: line.split(None, 3)[3] for line in lines[:-1]}
    # The inner rule first, then the outer one: both run, so both are listed.
    assert listed["/stacked"] == "permission('invoice:read') & role('admin')"

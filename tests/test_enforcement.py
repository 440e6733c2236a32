"""``enforce()`` inside a view: the rule sees the resource it is given; without the extension
the error says how to set it up."""

from __future__ import annotations

import pytest
from flask import Flask

from flask_rbac_abac import RBACABAC, predicate, role
from flask_rbac_abac.enforcement import enforce

from .conftest import FakeIdP, bearer, library_config


def test_enforce_passes_the_resource_to_the_rule(fake_idp: FakeIdP, key_prefix: str) -> None:
    fake_idp.add(1, roles=["viewer"])
    app = Flask(__name__)
    app.config.update(library_config(key_prefix))
    RBACABAC().init_app(app, redis=fake_idp.client)
    seen = []

    def owns(user, resource) -> bool:
        seen.append(resource)
        return resource == {"owner": user.user_id}

    @app.get("/docs/<int:owner>")
    def document(owner: int) -> object:
        return {"allowed": enforce(predicate(owns, "owner only"), {"owner": owner}).allowed}

    client = app.test_client()
    assert client.get("/docs/1", headers=bearer(1)).json == {"allowed": True}
    denied = client.get("/docs/2", headers=bearer(1))
    assert denied.status_code == 403
    assert denied.json["reason"] == "predicate_failed"
    assert seen == [{"owner": 1}, {"owner": 2}]


def test_enforce_without_the_extension_says_how_to_initialise_it() -> None:
    app = Flask(__name__)
    with (
        app.test_request_context("/"),
        pytest.raises(
            RuntimeError,
            match=r"^flask_rbac_abac is not initialised on this app: "
            r"call RBACABAC\(app\) or init_app\(app\)$",
        ),
    ):
        enforce(predicate(lambda user, resource: True, "any"))


def test_a_rule_is_a_view_decorator(fake_idp: FakeIdP, key_prefix: str) -> None:
    fake_idp.add(1, roles=["viewer"])
    fake_idp.add(2, roles=["intern"])
    app = Flask(__name__)
    app.config.update(library_config(key_prefix))
    RBACABAC().init_app(app, redis=fake_idp.client)

    @app.get("/report/<int:number>")
    @role("viewer")
    def report(number: int) -> object:
        return {"report": number}

    client = app.test_client()
    allowed = client.get("/report/7", headers=bearer(1))
    assert (allowed.status_code, allowed.json) == (200, {"report": 7})
    denied = client.get("/report/7", headers=bearer(2))
    assert (denied.status_code, denied.json["reason"]) == (403, "missing_role")

"""No log line ever holds a user's token or the service token, on any path of a request.

Every logger is captured at DEBUG (the root logger, so the library's, Flask's, urllib3's and
requests' records are all seen) while one request takes each path: allowed, denied, no valid
identity (401), attributes unobtainable (503), a rule that raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import responses
from flask import Flask, jsonify

from flask_rbac_abac import RBACABAC, predicate, requires, requires_permission

from .conftest import IDP, FakeIdP, library_config, make_token

SERVICE_TOKEN = "svc-token-that-must-never-be-logged-" + "s" * 16


def crash(user: object, resource: object) -> bool:
    raise ZeroDivisionError("a rule's own bug")


@pytest.fixture
def app(fake_idp: FakeIdP, key_prefix: str) -> Flask:
    fake_idp.add(1, roles=["admin"], permissions=["invoice:read"])
    fake_idp.add(2, roles=["viewer"], permissions=[])
    app = Flask(__name__)
    app.config.update(library_config(key_prefix, RBAC_ABAC_SERVICE_TOKEN=SERVICE_TOKEN))
    RBACABAC().init_app(app, redis=fake_idp.client)

    @app.get("/invoices")
    @requires_permission("invoice:read")
    def invoices() -> object:
        return jsonify(ok=True)

    @app.get("/crash")
    @requires(predicate(crash, "crashes"))
    def crashing() -> object:
        return jsonify(ok=True)

    return app


def idp_down(mock: responses.RequestsMock) -> None:
    mock.replace(responses.POST, IDP + "/api/refresh-user-cache/", status=503)


#: (path, user id, token mutation, IdP change, expected status)
PATHS: dict[str, tuple[str, int, Callable[[str], str], Callable[..., None] | None, int]] = {
    "allow": ("/invoices", 1, lambda t: t, None, 200),
    "deny": ("/invoices", 2, lambda t: t, None, 403),
    "bad signature (401)": ("/invoices", 1, lambda t: t[:-4] + "AAAA", None, 401),
    "unknown user (403)": ("/invoices", 99, lambda t: t, None, 403),
    "idp down (503)": ("/invoices", 1, lambda t: t, idp_down, 503),
    "rule raises (403)": ("/crash", 1, lambda t: t, None, 403),
}


@pytest.mark.parametrize("path", PATHS)
def test_no_token_in_any_log_record(
    path: str, app: Flask, fake_idp: FakeIdP, caplog: pytest.LogCaptureFixture
) -> None:
    url, user_id, mangle, change, status = PATHS[path]
    if change is not None:
        change(fake_idp.mock)
    token = mangle(make_token(user_id))
    with caplog.at_level(logging.DEBUG):
        response = app.test_client().get(url, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == status, response.json
    assert caplog.records, "nothing was logged: the check would prove nothing"
    logged = caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
    signature = token.rsplit(".", 1)[1]
    for secret in (token, signature, SERVICE_TOKEN):
        assert secret not in logged, f"{path}: a secret is in the log"

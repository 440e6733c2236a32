"""The extension's decision path, seen from outside: what each refusal answers, logs, counts and
signals, what a rule and an identity loader are given, and what is loaded once per request.

Through Flask's test client and the public API only (status, JSON body, ``WWW-Authenticate``,
``rbac.stats()``, the audit log, the ``decision_made`` signal); fakeredis and a ``responses`` IdP.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import responses
from flask import Flask, jsonify

from flask_rbac_abac import (
    RBACABAC,
    AttributesUnavailable,
    Decision,
    Rule,
    UserAttributes,
    current_attributes,
    current_identity,
    enforce,
    permission,
    requires,
    signals,
)
from flask_rbac_abac.rules import ALLOW, Context

from .conftest import IDP, SERVICE, FakeIdP, bearer, library_config
from .test_jwks import ISSUER, KeySet
from .test_jwks_keys import Endpoint

AUDIT = "flask_rbac_abac.audit"
EXTENSION_LOG = "flask_rbac_abac.extension"
#: The rule of /invoices and /invoices/<id>: the signal must hand this very object on.
READ = permission("invoice:read")
RULE_ERROR_BODY = {
    "success": False,
    "error": "the authorization rule failed",
    "reason": "rule_error",
}


class Recorder(Rule):
    """A rule of the application's: answers ``answer`` and keeps what it was asked about."""

    def __init__(self, answer: Decision, *, surely_allows: bool = False) -> None:
        self.answer = answer
        self.surely_allows = surely_allows
        #: (resource, environment) of each evaluation.
        self.seen: list[tuple[Any, dict[str, Any]]] = []

    def allows(self, user: UserAttributes) -> bool:
        return self.surely_allows

    def _evaluate(self, ctx: Context) -> Decision:
        self.seen.append((ctx.resource, dict(ctx.environment)))
        return self.answer

    def __repr__(self) -> str:
        return "Recorder()"


class Broken(Rule):
    """A rule of the application's whose shortcut check itself raises."""

    def allows(self, user: UserAttributes) -> bool:
        raise LookupError("the application's own bug")

    def __repr__(self) -> str:
        return "Broken()"


def missing_invoice(invoice_id: int) -> dict[str, Any]:
    raise KeyError(invoice_id)


def build(fake_idp: FakeIdP, key_prefix: str, rbac: RBACABAC | None = None, **extra: Any) -> Flask:
    fake_idp.add(1, roles=["accountant"], permissions=["invoice:read"])
    fake_idp.add(2, roles=["viewer"], permissions=[])
    app = Flask(__name__)
    app.config.update(library_config(key_prefix, **extra))
    (rbac or RBACABAC()).init_app(app, redis=fake_idp.client)

    @app.get("/invoices")
    @requires(READ)
    def invoices() -> Any:
        return jsonify(user=current_identity._get_current_object())

    @app.get("/invoices/<int:invoice_id>")
    @requires(READ, resource=missing_invoice)
    def invoice(invoice_id: int) -> Any:
        return jsonify(id=invoice_id)

    return app


def guarded_by(app: Flask, rule: Rule, path: str = "/custom") -> None:
    """``path`` on ``app``, protected by ``rule`` (no resource loader)."""

    @app.get(path, endpoint=path.strip("/"))
    @requires(rule)
    def view() -> Any:
        return jsonify(ok=True)


@pytest.fixture
def app(fake_idp: FakeIdP, key_prefix: str) -> Iterator[Flask]:
    app = build(fake_idp, key_prefix)
    yield app
    with app.app_context():
        app.extensions["rbac_abac"].close(app)


def stats(app: Flask) -> tuple[int, int]:
    """``(allowed, denied)`` of ``app``'s counters."""
    with app.app_context():
        counters = app.extensions["rbac_abac"].stats()
    return counters["allowed"], counters["denied"]


def decisions_sent(app: Flask, request: Callable[[], Any]) -> list[dict[str, Any]]:
    """The keyword arguments of every ``decision_made`` ``app`` sent while ``request`` ran."""
    seen: list[dict[str, Any]] = []

    def receiver(sender: Flask, **extra: Any) -> None:
        assert sender is app
        seen.append(extra)

    signals.decision_made.connect(receiver, app)
    try:
        request()
    finally:
        signals.decision_made.disconnect(receiver, app)
    return seen


def audit_records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == AUDIT]


def sent_header(response: Any, name: str) -> list[tuple[str, str]]:
    """The header lines named ``name`` (any case) as a server sends them: name spelled as set."""
    return [(k, v) for k, v in response.headers.to_wsgi_list() if k.lower() == name.lower()]


# -- identity ------------------------------------------------------------------------------


def test_no_identity_asks_for_a_bearer_token_in_the_canonical_header(app: Flask) -> None:
    response = app.test_client().get("/invoices")
    assert response.status_code == 401
    assert response.json == {
        "success": False,
        "error": "authentication required",
        "reason": "no_identity",
    }
    assert sent_header(response, "WWW-Authenticate") == [("WWW-Authenticate", "Bearer")]


INVALID_IDENTITY = {
    "success": False,
    "error": "the identity is not a valid user id",
    "reason": "invalid_identity",
}


def test_a_token_whose_subject_is_not_a_user_id_is_invalid_identity(
    app: Flask, fake_idp: FakeIdP
) -> None:
    response = app.test_client().get("/invoices", headers=bearer("bad:id"))
    assert response.status_code == 401
    assert response.json == INVALID_IDENTITY
    assert sent_header(response, "WWW-Authenticate") == [
        ("WWW-Authenticate", 'Bearer error="invalid_token"')
    ]
    assert fake_idp.requests == []


def with_loader(
    fake_idp: FakeIdP, key_prefix: str, loader: Callable[[], Any]
) -> tuple[Flask, RBACABAC]:
    rbac = RBACABAC()
    rbac.identity_loader(loader)
    return build(fake_idp, key_prefix, rbac=rbac), rbac


def test_a_loader_returning_an_invalid_user_id_is_invalid_identity_and_warned(
    fake_idp: FakeIdP, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = with_loader(fake_idp, key_prefix, lambda: "bad:id")
    with caplog.at_level(logging.WARNING, logger=EXTENSION_LOG):
        response = app.test_client().get("/invoices")
    assert response.status_code == 401
    assert response.json == INVALID_IDENTITY
    assert sent_header(response, "WWW-Authenticate") == [
        ("WWW-Authenticate", 'Bearer error="invalid_token"')
    ]
    warnings = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == EXTENSION_LOG]
    assert warnings == [(logging.WARNING, "identity loader returned an invalid user id")]
    assert fake_idp.requests == []


def test_a_loader_returning_none_is_no_identity(fake_idp: FakeIdP, key_prefix: str) -> None:
    app, _ = with_loader(fake_idp, key_prefix, lambda: None)
    response = app.test_client().get("/invoices")
    assert response.status_code == 401
    assert response.json["reason"] == "no_identity"
    assert sent_header(response, "WWW-Authenticate") == [("WWW-Authenticate", "Bearer")]


def test_a_loader_that_raises_is_no_identity_and_logged_with_its_traceback(
    fake_idp: FakeIdP, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    def loader() -> Any:
        raise RuntimeError("the session store is down")

    app, _ = with_loader(fake_idp, key_prefix, loader)
    with caplog.at_level(logging.WARNING, logger=EXTENSION_LOG):
        response = app.test_client().get("/invoices")
    assert response.status_code == 401
    assert response.json["reason"] == "no_identity"
    (record,) = [r for r in caplog.records if r.name == EXTENSION_LOG]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "identity loader raised; treating the caller as anonymous"
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


def test_the_identity_is_loaded_once_per_request(fake_idp: FakeIdP, key_prefix: str) -> None:
    calls: list[int] = []

    def loader() -> int:
        calls.append(1)
        return 1

    app, _ = with_loader(fake_idp, key_prefix, loader)
    client = app.test_client()
    response = client.get("/invoices")  # the guard, then the view's current_identity
    assert response.status_code == 200 and response.json == {"user": 1}
    assert len(calls) == 1
    assert client.get("/invoices").status_code == 200
    assert len(calls) == 2  # once per request, not once per process


def test_an_unreachable_jwks_is_identity_unavailable(
    fake_idp: FakeIdP, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyset = KeySet()
    keyset.add("k1")
    endpoint = Endpoint(keyset)
    endpoint.script.append(OSError("connection refused"))
    monkeypatch.setattr(urllib.request, "build_opener", endpoint)
    app = build(
        fake_idp,
        key_prefix,
        RBAC_ABAC_JWT_SECRET=None,
        RBAC_ABAC_JWKS_URL="https://idp.example.test/.well-known/jwks.json",
        RBAC_ABAC_JWT_AUDIENCE="billing_api",
        RBAC_ABAC_JWT_ISSUER=ISSUER,
    )
    headers = {"Authorization": "Bearer " + keyset.token("k1")}
    response = app.test_client().get("/invoices", headers=headers)
    assert len(endpoint.fetches) == 1
    assert response.status_code == 503
    assert response.json == {
        "success": False,
        "error": "the identity cannot be verified now",
        "reason": "identity_unavailable",
    }
    assert sent_header(response, "WWW-Authenticate") == []
    assert fake_idp.requests == []


# -- attributes ----------------------------------------------------------------------------


def test_attributes_unavailable_is_503_and_warned_with_the_user_and_the_cause(
    app: Flask, fake_idp: FakeIdP, caplog: pytest.LogCaptureFixture
) -> None:
    fake_idp.mock.replace(responses.POST, IDP + "/api/refresh-user-cache/", status=503)
    with caplog.at_level(logging.WARNING, logger=EXTENSION_LOG):
        response = app.test_client().get("/invoices", headers=bearer(1))
    assert response.status_code == 503
    assert response.json == {
        "success": False,
        "error": "attributes temporarily unavailable",
        "reason": "attributes_unavailable",
    }
    (record,) = [r for r in caplog.records if r.name == EXTENSION_LOG]
    assert record.levelno == logging.WARNING
    assert isinstance(record.args, tuple) and len(record.args) == 2
    user_id, cause = record.args
    assert user_id == 1 and isinstance(cause, AttributesUnavailable)
    assert record.getMessage() == f"attributes unavailable for user 1: {cause}"


def test_an_unknown_user_is_refused_counted_audited_and_signalled(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    responses_seen: list[Any] = []

    def request() -> None:
        responses_seen.append(app.test_client().get("/invoices", headers=bearer(42)))

    with caplog.at_level(logging.DEBUG, logger=AUDIT):
        sent = decisions_sent(app, request)
    (response,) = responses_seen
    assert response.status_code == 403
    assert response.json == {
        "success": False,
        "error": f"user 42 has no attributes in service {SERVICE}",
        "reason": "unknown_user",
    }
    assert sent == [{"user_id": 42, "allowed": False, "reason": "unknown", "rule": None}]
    assert audit_records(caplog) == [
        (logging.INFO, f"deny user=42 service={SERVICE} endpoint=invoices code=unknown_user")
    ]
    assert stats(app) == (0, 1)


# -- the decision --------------------------------------------------------------------------


def test_an_allow_is_audited_at_debug_and_signalled_with_its_rule(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=AUDIT):
        sent = decisions_sent(app, lambda: app.test_client().get("/invoices", headers=bearer(1)))
    assert sent == [{"user_id": 1, "allowed": True, "reason": "allowed", "rule": READ}]
    assert sent[0]["rule"] is READ
    assert audit_records(caplog) == [
        (logging.DEBUG, f"allow user=1 service={SERVICE} endpoint=invoices code=allowed")
    ]
    assert stats(app) == (1, 0)


def test_an_allow_is_not_audited_at_info_even_when_signalled(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=AUDIT):
        sent = decisions_sent(app, lambda: app.test_client().get("/invoices", headers=bearer(1)))
        assert app.test_client().get("/invoices", headers=bearer(1)).status_code == 200
    assert [s["allowed"] for s in sent] == [True]
    assert audit_records(caplog) == []
    assert stats(app) == (2, 0)


def test_a_deny_is_audited_at_info_and_signalled_with_its_rule(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    responses_seen: list[Any] = []

    def request() -> None:
        responses_seen.append(app.test_client().get("/invoices", headers=bearer(2)))

    with caplog.at_level(logging.INFO, logger=AUDIT):
        sent = decisions_sent(app, request)
    assert responses_seen[0].status_code == 403
    assert responses_seen[0].json["reason"] == "missing_permission"
    reason = "missing permission: invoice:read"
    assert sent == [{"user_id": 2, "allowed": False, "reason": reason, "rule": READ}]
    assert sent[0]["rule"] is READ
    assert audit_records(caplog) == [
        (logging.INFO, f"deny user=2 service={SERVICE} endpoint=invoices code=missing_permission")
    ]
    assert stats(app) == (0, 1)


def test_a_resource_loader_that_raises_denies_logged_audited_and_signalled(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    responses_seen: list[Any] = []

    def request() -> None:
        responses_seen.append(app.test_client().get("/invoices/7", headers=bearer(1)))

    with caplog.at_level(logging.INFO):
        sent = decisions_sent(app, request)
    (response,) = responses_seen
    assert response.status_code == 403
    assert response.json == RULE_ERROR_BODY
    assert sent == [
        {"user_id": 1, "allowed": False, "reason": "the authorization rule failed", "rule": READ}
    ]
    assert sent[0]["rule"] is READ
    (error,) = [r for r in caplog.records if r.name == EXTENSION_LOG]
    assert error.levelno == logging.ERROR
    assert error.getMessage() == f"resource loader for {READ!r} raised; denying"
    assert error.exc_info is not None and error.exc_info[0] is KeyError
    assert audit_records(caplog) == [
        (logging.INFO, f"deny user=1 service={SERVICE} endpoint=invoice code=rule_error")
    ]
    assert stats(app) == (0, 1)


def test_a_rule_that_raises_denies_as_an_error_logged_audited_and_signalled(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Broken()
    guarded_by(app, broken)
    responses_seen: list[Any] = []

    def request() -> None:
        responses_seen.append(app.test_client().get("/custom", headers=bearer(1)))

    with caplog.at_level(logging.INFO):
        sent = decisions_sent(app, request)
    (response,) = responses_seen
    assert response.status_code == 403
    assert response.json == RULE_ERROR_BODY
    reason = "the authorization rule failed"
    assert sent == [{"user_id": 1, "allowed": False, "reason": reason, "rule": broken}]
    (error,) = [r for r in caplog.records if r.name == EXTENSION_LOG]
    assert error.levelno == logging.ERROR
    assert error.getMessage() == "authorization rule Broken() raised; denying"
    assert error.exc_info is not None and error.exc_info[0] is LookupError
    assert audit_records(caplog) == [
        (logging.INFO, f"deny user=1 service={SERVICE} endpoint=custom code=rule_error")
    ]
    assert stats(app) == (0, 1)


def test_a_rule_is_given_no_resource_without_a_loader_and_the_request(app: Flask) -> None:
    rule = Recorder(ALLOW)
    guarded_by(app, rule)
    assert app.test_client().get("/custom", headers=bearer(1)).status_code == 200
    ((resource, environment),) = rule.seen
    assert resource is None
    assert environment == {
        "method": "GET",
        "path": "/custom",
        "endpoint": "custom",
        "remote_addr": "127.0.0.1",
    }


def test_a_rule_that_surely_allows_is_not_evaluated(app: Flask) -> None:
    # Rule.allows' contract: True means "evaluate would allow", and the extension then skips it.
    rule = Recorder(ALLOW, surely_allows=True)
    guarded_by(app, rule)
    assert app.test_client().get("/custom", headers=bearer(1)).status_code == 200
    assert rule.seen == []
    assert stats(app) == (1, 0)


def test_enforce_in_a_view_gives_the_rule_the_request_and_audits_the_denial(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    rule = Recorder(Decision(False, "not this invoice", "predicate_failed"))

    @app.get("/checked/<int:number>")
    def checked(number: int) -> Any:
        enforce(rule, resource={"number": number})
        return jsonify(ok=True)

    with caplog.at_level(logging.INFO, logger=AUDIT):
        response = app.test_client().get("/checked/5", headers=bearer(1))
    assert response.status_code == 403
    assert response.json == {
        "success": False,
        "error": "not this invoice",
        "reason": "predicate_failed",
    }
    ((resource, environment),) = rule.seen
    assert resource == {"number": 5}
    assert environment["path"] == "/checked/5" and environment["endpoint"] == "checked"
    assert audit_records(caplog) == [
        (logging.INFO, f"deny user=1 service={SERVICE} endpoint=checked code=predicate_failed")
    ]


def test_current_attributes_outside_a_rule_loads_once(app: Flask, fake_idp: FakeIdP) -> None:
    @app.get("/me")
    def me() -> Any:
        first = current_attributes._get_current_object()
        again = current_attributes._get_current_object()
        return jsonify(same=first is again, roles=first.roles)

    response = app.test_client().get("/me", headers=bearer(1))
    assert response.json == {"same": True, "roles": ["accountant"]}
    assert len(fake_idp.requests) == 1

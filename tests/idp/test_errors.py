"""Operations raise domain errors; the edge (idp_app.errors) answers each with its JSON error."""

from __future__ import annotations

from typing import Any

import pytest

from idp_app import domain_errors
from idp_app.errors import OPERATION_ERRORS

CASES = [
    (domain_errors.UserNotFound(7), 404, "user 7 not found or inactive", "user_not_found"),
    (
        domain_errors.ServiceNotRegistered("nope_api"),
        404,
        "service 'nope_api' is not registered",
        "service_not_registered",
    ),
    (domain_errors.AlreadyExists("user", "alice"), 409, "user 'alice' already exists", None),
    (
        domain_errors.UnknownRoles("billing_api", ["god", "root"]),
        400,
        "unknown role(s) for service 'billing_api': god, root",
        None,
    ),
    (domain_errors.InvalidCredentials(), 401, "invalid username or password", None),
    (
        domain_errors.TokenIssuingNotConfigured(),
        503,
        "token issuing is not configured: no signing key (run `flask --app idp_app init-db` or "
        "`rotate-signing-key`, or set RBAC_ABAC_JWT_PRIVATE_KEY or RBAC_ABAC_JWT_SECRET)",
        None,
    ),
    (
        domain_errors.SigningKeyFromConfiguration(),
        409,
        "the signing key comes from configuration (RBAC_ABAC_JWT_SECRET or "
        "RBAC_ABAC_JWT_PRIVATE_KEY): rotate it there",
        None,
    ),
    (
        domain_errors.RedisUnavailable("Redis is unavailable: warmed 3 users of 'billing_api'"),
        503,
        "Redis is unavailable: warmed 3 users of 'billing_api'",
        None,
    ),
    (
        domain_errors.InvalidCursor(),
        400,
        "cursor is not a cursor from a previous page",
        None,
    ),
    (
        domain_errors.TokenNotFound("billing_api", 7),
        404,
        "service 'billing_api' has no token 7",
        "token_not_found",
    ),
]


def test_every_operation_error_has_an_answer() -> None:
    kinds = {
        kind
        for kind in domain_errors.OperationError.__subclasses__()
        if kind.__module__ == domain_errors.__name__  # not a test's own subclass
    }
    assert kinds == set(OPERATION_ERRORS) == {type(case[0]) for case in CASES}


@pytest.mark.parametrize(("error", "status", "message", "code"), CASES)
def test_operation_error_becomes_its_json_answer(
    make_app: Any, sqlite_url: str, error: Exception, status: int, message: str, code: str | None
) -> None:
    app = make_app(sqlite_url)

    def refuse() -> None:
        raise error

    app.add_url_rule("/refuse", "refuse", refuse)
    r = app.test_client().get("/refuse")
    body: dict[str, Any] = {"success": False, "error": message}
    if code is not None:
        body["code"] = code
    assert (r.status_code, r.json) == (status, body)


def test_an_operation_error_without_an_answer_is_a_logged_500(
    make_app: Any, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(sqlite_url)

    class Unmapped(domain_errors.OperationError):
        pass

    def refuse() -> None:
        raise Unmapped("secret detail")

    app.add_url_rule("/refuse", "refuse", refuse)
    r = app.test_client().get("/refuse")
    assert (r.status_code, r.json) == (500, {"success": False, "error": "internal server error"})
    assert b"secret detail" not in r.data
    assert "unhandled error" in caplog.text

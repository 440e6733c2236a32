"""Rules on their own: composition, reasons, errors, environment."""

from __future__ import annotations

import pytest

from flask_rbac_abac import UserAttributes, attribute, permission, predicate, requires, role
from flask_rbac_abac.rules import Context

USER = UserAttributes(
    user_id=1,
    service_name="billing_api",
    roles=["accountant"],
    permissions=["invoice:read", "invoice:write"],
    attributes={"department": "finance", "clearance": 2},
)


def decide(rule, user=USER, resource=None, request=None):
    return rule.evaluate(Context(user, resource, request))


def test_permissions_are_all_of_and_name_what_is_missing() -> None:
    assert decide(permission("invoice:read", "invoice:write")).allowed
    decision = decide(permission("invoice:read", "report:read", "admin:all"))
    assert (decision.allowed, decision.code) == (False, "missing_permission")
    assert decision.reason == "missing permission: report:read, admin:all"


def test_composition() -> None:
    assert decide(role("admin") | permission("invoice:read")).allowed
    assert not decide(role("accountant") & attribute("clearance", lambda v: v >= 3)).allowed
    assert decide(~role("intern")).allowed
    assert decide(~role("accountant")).code == "negated"
    either = decide(role("admin") | attribute("department", "sales"))
    assert (
        either.reason
        == "missing role: one of admin; attribute department does not satisfy the rule"
    )


def test_errors_deny_even_under_not() -> None:
    broken = predicate(lambda user, resource: resource["missing"])
    assert decide(broken).code == "rule_error"
    assert decide(~broken).allowed is False
    assert decide(attribute("clearance", lambda v: v.upper())).code == "rule_error"


def test_only_true_allows() -> None:
    assert not decide(predicate(lambda user, resource: 1)).allowed
    assert not decide(attribute("clearance", lambda v: "yes")).allowed


def test_environment_predicate() -> None:
    class FakeRequest:
        method, path, endpoint, remote_addr = "GET", "/x", "x", "10.0.0.1"

    rule = predicate(
        lambda user, resource, env: env["method"] == "GET", "reads only", with_environment=True
    )
    assert decide(rule, request=FakeRequest()).allowed
    assert not decide(rule).allowed  # no request: an empty environment


def test_bad_rule_construction() -> None:
    with pytest.raises(ValueError, match=r"role\(\) needs at least one role name"):
        role()
    with pytest.raises(ValueError, match=r"permission\(\) needs at least one permission name"):
        permission("")
    with pytest.raises(TypeError, match="requires\\(\\) needs a rule, got str"):
        requires("admin")  # type: ignore[arg-type]

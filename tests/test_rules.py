"""Rules on their own: composition, reasons, errors, environment."""

from __future__ import annotations

import pytest

from flask_rbac_abac import UserAttributes, attribute, permission, predicate, requires, role
from flask_rbac_abac.rules import Context, Role, UnlikeTypes, strictly_equal

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
    # No request: the environment is empty, so env["method"] raises KeyError, which the
    # evaluator turns into a rule error (the third value: denied, never allowed).
    decision = decide(rule)
    assert (decision.allowed, decision.code) == (False, "rule_error")


def test_bad_rule_construction() -> None:
    with pytest.raises(ValueError, match=r"role\(\) needs at least one role name"):
        role()
    with pytest.raises(ValueError, match=r"permission\(\) needs at least one permission name"):
        permission("")
    with pytest.raises(TypeError, match="requires\\(\\) needs a rule, got str"):
        requires("admin")  # type: ignore[arg-type]


# -- three-valued evaluation: an error is never a grant -------------------------------------


def raises(user, resource):
    raise RuntimeError("boom")


def test_the_issue_example_is_an_error_not_an_allow() -> None:
    import time

    user = UserAttributes(
        user_id=7, service_name="billing_api", roles=["viewer"], attributes={"blocked_until": "x"}
    )
    rule = ~(role("banned") | predicate(lambda u, r: u.get("blocked_until") > time.time()))
    decision = decide(rule, user)
    assert (decision.allowed, decision.code, decision.outcome) == (False, "rule_error", "error")


@pytest.mark.parametrize(
    "rule",
    [
        ~(role("intern") | predicate(raises)),
        ~(predicate(raises) | role("intern")),
        ~(role("accountant") & predicate(raises)),
        ~~predicate(raises),
        ~~~predicate(raises),
        ~(~role("intern") & ~predicate(raises)),
        role("intern") | ~(permission("invoice:read") & predicate(raises)) | role("accountant"),
    ],
    ids=repr,
)
def test_an_evaluated_error_is_rule_error_under_every_combinator(rule) -> None:
    decision = decide(rule)
    assert (decision.allowed, decision.code) == (False, "rule_error")


def test_an_error_stops_an_any_of_even_when_a_later_branch_would_allow() -> None:
    assert decide(predicate(raises) | role("accountant")).code == "rule_error"
    # evaluated left to right: a branch that decides first means the raising one never runs
    assert decide(role("accountant") | predicate(raises)).allowed
    assert decide(~(permission("nope") & predicate(raises))).allowed


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, True),
        (0, False),
        (True, 1),
        (False, 0),
        (True, 1.0),
        ("1", 1),
        (1, "1"),
        (None, False),
        ("true", True),
        ((1, 2), "12"),
        ({"a": 1}, (("a", 1),)),
        ((True,), (1,)),
    ],
)
def test_attribute_of_unlike_types_is_an_error(value, expected) -> None:
    user = UserAttributes(user_id=1, service_name="billing_api", attributes={"x": value})
    assert decide(attribute("x", expected), user).code == "rule_error"
    assert decide(~attribute("x", expected), user).code == "rule_error"


@pytest.mark.parametrize(
    ("value", "expected", "allowed"),
    [
        (True, True, True),
        (False, False, True),
        (True, False, False),
        (1, 1, True),
        (1, 1.0, True),
        (2, 1, False),
        ("a", "a", True),
        (None, None, True),
        ((1, "a"), [1, "a"], True),
        ((1, 2), [1, 2, 3], False),
        ({"a": True}, {"a": True}, True),
        ({"a": 1}, {"b": 1}, False),
    ],
)
def test_attribute_of_like_types_compares(value, expected, allowed) -> None:
    user = UserAttributes(user_id=1, service_name="billing_api", attributes={"x": value})
    decision = decide(attribute("x", expected), user)
    assert decision.allowed is allowed
    assert decision.code == ("allowed" if allowed else "attribute_mismatch")


@pytest.mark.parametrize("result", [None, 1, 0, "yes", "", [], object()])
def test_a_check_that_returns_no_bool_is_an_error(result) -> None:
    assert decide(predicate(lambda user, resource: result)).code == "rule_error"
    assert decide(~predicate(lambda user, resource: result)).code == "rule_error"
    assert decide(~attribute("clearance", lambda v: result)).code == "rule_error"


def test_an_attribute_check_that_raises_is_an_error_under_not() -> None:
    assert decide(~attribute("department", lambda v: v > 3)).code == "rule_error"


def test_a_custom_rule_returning_no_decision_is_an_error() -> None:
    from flask_rbac_abac import Decision, Rule

    class Sloppy(Rule):
        def _evaluate(self, ctx):
            return True

    class Forged(Rule):
        def _evaluate(self, ctx):
            return Decision(True, "ok", "rule_error")

    assert decide(~Sloppy()).code == "rule_error"
    assert decide(~Forged()).code == "rule_error"
    with pytest.raises(ValueError, match="a decision with code 'rule_error' cannot allow"):
        Decision(True, "", "rule_error")


def test_rule_reprs_read_as_code() -> None:
    rule = ~(role("a", "b") | permission("x:y")) & attribute("n", 1)
    assert repr(rule) == "(~(role('a', 'b') | permission('x:y')) & attribute('n', 1))"


def test_a_failed_comparison_is_logged_with_types_not_values(caplog) -> None:
    user = UserAttributes(user_id=1, service_name="billing_api", attributes={"ssn": "123-45"})
    with caplog.at_level("ERROR", logger="flask_rbac_abac"):
        assert decide(attribute("ssn", 12345), user).code == "rule_error"
        assert decide(predicate(lambda u, r: u.get("ssn")), user).code == "rule_error"
    assert "cannot compare a string with a number" in caplog.text
    assert "predicate 'denied by policy' returned a str, not a bool" in caplog.text
    assert "123-45" not in caplog.text


@pytest.mark.parametrize(
    ("value", "expected", "equal"),
    [
        (1, 1.0, True),
        (1, 2, False),
        ("a", "a", True),
        ("a", "b", False),
        (None, None, True),
        (True, True, True),
        (True, False, False),
        ([1, "x"], (1, "x"), True),
        ([1, "x"], [1, "y"], False),
        ([1], [1, 1], False),
        ([], [], True),
        ({"a": [1]}, {"a": [1]}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": 1}, {"b": 1}, False),
        ({"a": 1}, {"a": 1, "b": 1}, False),
    ],
)
def test_strictly_equal_compares_json_values(value, expected, equal) -> None:
    assert strictly_equal(value, expected) is equal
    assert strictly_equal(expected, value) is equal


@pytest.mark.parametrize(
    ("value", "expected", "message"),
    [
        (True, 1, "cannot compare a bool with a number"),
        (0, False, "cannot compare a number with a bool"),
        ("1", 1, "cannot compare a string with a number"),
        (None, "", "cannot compare a null with a string"),
        ([1], {"a": 1}, "cannot compare a array with a object"),
        ([True], [1], "cannot compare a bool with a number"),
        ({"a": 1}, {"a": "1"}, "cannot compare a number with a string"),
        (b"x", "x", "cannot compare a bytes with a string"),
    ],
)
def test_strictly_equal_refuses_unlike_types_naming_only_the_types(
    value, expected, message
) -> None:
    with pytest.raises(UnlikeTypes, match=message) as raised:
        strictly_equal(value, expected)
    assert str(raised.value).startswith("cannot compare a ")


def test_denials_carry_exact_codes_and_are_false_not_falsy() -> None:
    seen = []

    def check(user, resource) -> bool:
        seen.append((user, resource))
        return False

    decision = decide(predicate(check, "never"), resource="doc-1")
    assert (decision.allowed, decision.reason, decision.code) == (
        False,
        "never",
        "predicate_failed",
    )
    assert decision.allowed is False and seen == [(USER, "doc-1")]
    decision = decide(attribute("region", "eu"))
    assert decision.allowed is False
    assert (decision.reason, decision.code) == ("missing attribute: region", "missing_attribute")
    decision = decide(role("admin"))
    assert decision.allowed is False and decision.code == "missing_role"


def test_any_of_denial_joins_reasons_and_takes_the_first_code() -> None:
    decision = decide(role("admin") | attribute("region", "eu"))
    assert decision.allowed is False
    assert decision.reason == "missing role: one of admin; missing attribute: region"
    assert decision.code == "missing_role"


def test_an_attribute_check_returning_a_non_bool_is_named_in_the_log(caplog) -> None:
    decision = decide(attribute("clearance", lambda v: "yes"))
    assert (decision.allowed, decision.code) == (False, "rule_error")
    assert "the check of attribute clearance returned a str, not a bool" in caplog.text


def test_only_a_denial_may_carry_the_rule_error_code() -> None:
    from flask_rbac_abac.rules import RULE_ERROR, Decision

    assert Decision(False, "boom", RULE_ERROR).allowed is False
    assert Decision(True, "fine", "").allowed is True
    with pytest.raises(ValueError):
        Decision(True, "boom", RULE_ERROR)


def test_a_predicate_built_directly_takes_user_and_resource_only() -> None:
    from flask_rbac_abac.rules import Predicate

    seen = []

    def owns(user, resource) -> bool:
        seen.append((user, resource))
        return resource == {"owner": user.user_id}

    assert decide(Predicate(owns, "owner only"), resource={"owner": 1}).allowed
    assert seen == [(USER, {"owner": 1})]


def test_an_environment_predicate_gets_user_resource_and_environment() -> None:
    seen = []

    def check(user, resource, env) -> bool:
        seen.append((user, resource, env))
        return True

    assert decide(predicate(check, with_environment=True), resource={"id": 5}).allowed
    assert seen == [(USER, {"id": 5}, {})]


def test_each_error_path_logs_the_rule_and_the_cause(caplog) -> None:
    from flask_rbac_abac import Decision, Rule

    class Sloppy(Rule):
        def _evaluate(self, ctx: Context) -> Decision:
            return "yes"  # type: ignore[return-value]

        def __repr__(self) -> str:
            return "sloppy()"

    broken = predicate(lambda user, resource: resource["missing"], "needs missing")
    unlike = attribute("clearance", "2")
    with caplog.at_level("ERROR", logger="flask_rbac_abac"):
        for rule in (broken, Sloppy(), unlike):
            assert decide(rule, resource={}).code == "rule_error"
    raised, returned, failed = caplog.records
    assert raised.getMessage() == "authorization rule predicate('needs missing') raised; denying"
    assert raised.exc_info is not None and raised.exc_info[0] is KeyError
    assert returned.getMessage() == (
        "authorization rule sloppy() returned 'yes', not a Decision; denying"
    )
    assert failed.getMessage() == (
        "authorization rule attribute('clearance', '2') failed: "
        "cannot compare a number with a string; denying"
    )


def test_only_a_plain_role_rule_is_decided_from_its_set_of_names() -> None:
    class Mine(Role):
        pass

    assert role("nobody", USER.roles[0]).any_role == frozenset({"nobody", USER.roles[0]})
    assert role("nobody", USER.roles[0]).allows(USER) is True
    assert role("nobody").allows(USER) is False
    assert Mine(USER.roles[0]).any_role is None  # a subclass may evaluate differently
    assert Mine(USER.roles[0]).allows(USER) is False
    assert permission(*USER.permissions).any_role is None
    assert (role(USER.roles[0]) & role(USER.roles[0])).any_role is None

"""Generated rule trees: an error in any evaluated leaf is a denial, whatever wraps it.

Trees of depth <= 5 over role, permission, attribute and predicate leaves (some of which raise,
return a non-bool or compare unlike types) are evaluated three ways: by the library, by the
independent reference evaluator below, and through a real Flask app. A tree is built from a plain
description (tuples), so the reference never touches the library's rule classes.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, jsonify
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flask_rbac_abac import RBACABAC, Decision, Rule, UserAttributes, attribute, requires
from flask_rbac_abac import permission as permission_rule
from flask_rbac_abac import predicate as predicate_rule
from flask_rbac_abac import role as role_rule
from flask_rbac_abac.rules import AllOf, AnyOf, Context, Permission, Role

from .conftest import SERVICE, FakeIdP, bearer, examples, library_config

ROLES = ("admin", "accountant", "viewer", "banned")
PERMISSIONS = ("invoice:read", "invoice:write", "report:read")
ATTRIBUTE_NAMES = ("flag", "level", "department", "blocked_until", "tags")
#: What a predicate leaf does when called: the first two decide, the others are errors.
BEHAVIOURS = ("true", "false", "raise", "none", "int", "compare_blocked_until")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.0, 1.0, 1.5]),
    st.sampled_from(["", "a", "finance", "1", "true"]),
)
json_values = st.one_of(scalars, st.lists(scalars, max_size=2))


class Raised(Exception):
    """What a raising leaf raises (any exception would do)."""


# -- tree descriptions ----------------------------------------------------------------------

leaves = st.one_of(
    st.tuples(st.just("role"), st.lists(st.sampled_from(ROLES), min_size=1, max_size=2)),
    st.tuples(
        st.just("permission"), st.lists(st.sampled_from(PERMISSIONS), min_size=1, max_size=2)
    ),
    st.tuples(st.just("attribute"), st.sampled_from(ATTRIBUTE_NAMES), json_values),
    st.tuples(st.just("predicate"), st.sampled_from(BEHAVIOURS)),
)


def trees(depth: int) -> st.SearchStrategy[tuple[Any, ...]]:
    """Rule descriptions of depth at most ``depth`` (a leaf has depth 0)."""
    if depth == 0:
        return leaves
    sub = trees(depth - 1)
    return st.one_of(
        leaves,
        st.tuples(st.sampled_from(["and", "or"]), st.lists(sub, min_size=2, max_size=3)),
        st.tuples(st.just("not"), sub),
    )


users = st.builds(
    dict,
    roles=st.lists(st.sampled_from(ROLES), max_size=3, unique=True),
    permissions=st.lists(st.sampled_from(PERMISSIONS), max_size=3, unique=True),
    attributes=st.dictionaries(st.sampled_from(ATTRIBUTE_NAMES), json_values, max_size=5),
)


# -- the reference evaluator: three values, written from the specification -----------------

ALLOW, DENY, ERROR = "allow", "deny", "error"


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return "bool"
    if type(value) in (int, float):
        return "number"
    if type(value) is str:
        return "string"
    return "array"  # the generated values are scalars or lists of scalars


def same(value: Any, expected: Any) -> bool | None:
    """Equal (True), different (False), or not comparable (None: unlike JSON types)."""
    if json_type(value) != json_type(expected):
        return None
    if json_type(value) != "array":
        return bool(value == expected)
    if len(value) != len(expected):
        return False
    results = [same(a, b) for a, b in zip(value, expected, strict=True)]
    if None in results:
        return None
    return all(results)


def reference(tree: tuple[Any, ...], user: dict[str, Any]) -> str:
    """What the rule must decide: evaluated left to right, the first error wins, and ``~``
    leaves an error alone."""
    kind = tree[0]
    if kind == "role":
        return ALLOW if set(tree[1]) & set(user["roles"]) else DENY
    if kind == "permission":
        return ALLOW if set(tree[1]) <= set(user["permissions"]) else DENY
    if kind == "attribute":
        if tree[1] not in user["attributes"]:
            return DENY
        equal = same(user["attributes"][tree[1]], tree[2])
        return ERROR if equal is None else ALLOW if equal else DENY
    if kind == "predicate":
        behaviour = tree[1]
        if behaviour == "compare_blocked_until":
            blocked = user["attributes"].get("blocked_until")
            if json_type(blocked) not in ("number", "bool"):
                return ERROR  # None or a string compared with a float raises TypeError
            return ALLOW if blocked > 0.5 else DENY
        return {"true": ALLOW, "false": DENY}.get(behaviour, ERROR)
    if kind == "not":
        inner = reference(tree[1], user)
        return {ALLOW: DENY, DENY: ALLOW, ERROR: ERROR}[inner]
    stop = DENY if kind == "and" else ALLOW
    for child in tree[1]:
        result = reference(child, user)
        if result in (stop, ERROR):
            return result
    return ALLOW if kind == "and" else DENY


# -- building library rules from a description ----------------------------------------------


class Calls:
    """Which leaves ran and which of them raised."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.raised: list[str] = []


def predicate_fn(behaviour: str, calls: Calls) -> Any:
    def fn(user: UserAttributes, resource: Any) -> Any:
        calls.ran.append(behaviour)
        try:
            if behaviour == "raise":
                raise Raised("a leaf raised")
            if behaviour == "compare_blocked_until":
                return user.get("blocked_until") > 0.5
            return {"true": True, "false": False, "none": None, "int": 1}[behaviour]
        except Exception:
            calls.raised.append(behaviour)
            raise

    return fn


def build(tree: tuple[Any, ...], calls: Calls) -> Rule:
    kind = tree[0]
    if kind == "role":
        return role_rule(*tree[1])
    if kind == "permission":
        return permission_rule(*tree[1])
    if kind == "attribute":
        return attribute(tree[1], tree[2])
    if kind == "predicate":
        return predicate_rule(predicate_fn(tree[1], calls), tree[1])
    if kind == "not":
        return ~build(tree[1], calls)
    combine = operator.and_ if kind == "and" else operator.or_
    return functools.reduce(combine, (build(child, calls) for child in tree[1]))


def to_user(user: dict[str, Any], user_id: int = 1) -> UserAttributes:
    return UserAttributes(user_id=user_id, service_name=SERVICE, **user)


def decide(tree: tuple[Any, ...], user: dict[str, Any]) -> tuple[Decision, Calls]:
    calls = Calls()
    return build(tree, calls).evaluate(Context(to_user(user))), calls


def with_leaf_raising(tree: tuple[Any, ...], index: int) -> tuple[tuple[Any, ...], bool]:
    """``tree`` with its ``index``-th leaf (depth first) replaced by a raising predicate."""
    counter = itertools.count()

    def walk(node: tuple[Any, ...]) -> tuple[Any, ...]:
        if node[0] == "not":
            return ("not", walk(node[1]))
        if node[0] in ("and", "or"):
            return (node[0], [walk(child) for child in node[1]])
        return ("predicate", "raise") if next(counter) == index else node

    new = walk(tree)
    return new, index < next(counter)


RULES = settings(
    max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# -- properties -----------------------------------------------------------------------------


@RULES
@given(tree=trees(5), user=users)
def test_any_evaluated_leaf_that_raised_makes_the_decision_rule_error(tree, user) -> None:
    decision, calls = decide(tree, user)
    if calls.raised:
        assert (decision.allowed, decision.code, decision.outcome) == (False, "rule_error", "error")


@RULES
@given(tree=trees(5), user=users)
def test_the_library_agrees_with_the_reference_evaluator(tree, user) -> None:
    decision, _ = decide(tree, user)
    expected = reference(tree, user)
    event(expected)  # --hypothesis-show-statistics: all three outcomes are generated
    assert decision.outcome == expected
    assert decision.allowed is (expected == ALLOW)
    assert (decision.code == "rule_error") is (expected == ERROR)


@RULES
@given(tree=trees(5), user=users, data=st.data())
def test_a_raising_leaf_never_turns_anything_into_an_allow(tree, user, data) -> None:
    before, _ = decide(tree, user)
    index = data.draw(st.integers(0, 40), label="leaf")
    broken, replaced = with_leaf_raising(tree, index)
    after, calls = decide(broken, user)
    assert after.outcome in (before.outcome, ERROR) if replaced else after == before
    if after.allowed:
        assert before.allowed
        assert calls.raised == []


# -- the same through a real app: the caller sees 403 rule_error ------------------------------


class Current(Rule):
    """The rule under test this example (a route's rule is fixed once the app has served)."""

    rule: Rule = role_rule("admin")

    def _evaluate(self, ctx: Context) -> Decision:
        return self.rule.evaluate(ctx)


@pytest.fixture
def probe(fake_idp: FakeIdP, key_prefix: str) -> Iterator[tuple[Flask, FakeIdP]]:
    app = Flask(__name__)
    app.config.update(library_config(key_prefix))
    RBACABAC(app, redis=fake_idp.client)

    @app.get("/probe")
    @requires(Current())
    def probe_view() -> Any:
        return jsonify(ok=True)

    yield app, fake_idp
    with app.app_context():
        app.extensions["rbac_abac"].close(app)


user_ids = itertools.count(1000)


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tree=trees(5), user=users)
def test_through_flask_an_error_is_403_rule_error(probe, tree, user) -> None:
    app, idp = probe
    user_id = next(user_ids)
    idp.add(user_id, **user)
    calls = Calls()
    Current.rule = build(tree, calls)
    response = app.test_client().get("/probe", headers=bearer(user_id))
    expected = reference(tree, user)
    if calls.raised or expected == ERROR:
        assert (response.status_code, response.json) == (
            403,
            {"success": False, "error": "the authorization rule failed", "reason": "rule_error"},
        )
    elif expected == DENY:
        assert response.status_code == 403
        assert response.json["reason"] not in ("rule_error", "allowed")
    else:
        assert (response.status_code, response.json) == (200, {"ok": True})


def test_through_flask_the_issue_example_is_403_rule_error(probe) -> None:
    import time

    app, idp = probe
    idp.add(999, roles=["viewer"], attributes={"blocked_until": "2030-01-01"})
    Current.rule = ~(
        role_rule("banned") | predicate_rule(lambda u, r: u.get("blocked_until") > time.time())
    )
    response = app.test_client().get("/probe", headers=bearer(999))
    assert (response.status_code, response.json["reason"]) == (403, "rule_error")
    idp.add(998, roles=["viewer"], attributes={"blocked_until": 0})
    assert app.test_client().get("/probe", headers=bearer(998)).status_code == 200


@RULES
@given(tree=trees(5), user=users)
def test_allows_never_grants_what_evaluate_would_not_and_runs_no_leaf(tree, user) -> None:
    """:meth:`Rule.allows` is the extension's shortcut (no Context, no Decision): where it says
    True the reference evaluator allows too, and it never calls a predicate."""
    calls = Calls()
    rule = build(tree, calls)
    if rule.allows(to_user(user)):
        assert reference(tree, user) == ALLOW
    assert calls.ran == []


@RULES
@given(
    names=st.lists(st.sampled_from(ROLES), min_size=1, max_size=2),
    perms=st.lists(st.sampled_from(PERMISSIONS), min_size=1, max_size=2),
    user=users,
)
def test_allows_is_exact_for_role_and_permission_rules(names, perms, user) -> None:
    """For the rules a protected route most often has, the shortcut decides every allow."""
    held = to_user(user)
    for tree in (
        ("role", names),
        ("permission", perms),
        ("and", [("role", names), ("permission", perms)]),
    ):
        assert build(tree, Calls()).allows(held) is (reference(tree, user) == ALLOW)


def test_allows_is_false_for_subclasses_and_empty_alternatives() -> None:
    class Strict(Role):
        def _evaluate(self, ctx: Context) -> Decision:
            return Decision(False, "never", "never")

    admin = to_user({"roles": ["admin"]})
    assert role_rule("admin").allows(admin) is True
    assert Strict("admin").allows(admin) is False
    assert Strict("admin").evaluate(Context(admin)).allowed is False
    assert AnyOf().allows(admin) is False
    assert (~role_rule("viewer")).allows(admin) is False


def test_allows_of_an_alternative_looks_at_its_first_rule_only() -> None:
    class Ordered(AnyOf):
        pass

    class Every(AllOf):
        pass

    class Held(Permission):
        pass

    admin = to_user({"roles": ["admin"]})
    assert (role_rule("admin") | role_rule("viewer")).allows(admin) is True
    # the second alternative allows too, but only past a denial of the first: evaluate it
    assert (role_rule("viewer") | role_rule("admin")).allows(admin) is False
    assert Ordered(role_rule("admin")).allows(admin) is False  # a subclass may differ
    assert (role_rule("admin") & role_rule("admin")).allows(admin) is True
    assert Every(role_rule("admin")).allows(admin) is False
    editor = to_user({"roles": ["editor"], "permissions": ["write"]})
    assert permission_rule("write").allows(editor) is True
    assert Held("write").allows(editor) is False

"""The hot path (:mod:`flask_rbac_abac.hotpath`) decides exactly as the full path does.

Two apps are built alike over one fakeredis and one ``responses`` IdP: ``hot`` as the extension
builds it, ``full`` with its hot path taken away. Each case puts both into the same state (a
warm-up request, then a change: an expired token, an L1 entry due or evicted, a revocation, an
audit logger at DEBUG, a ``decision_made`` receiver, an identity loader, a forked process) and
sends both the same request. Their answers must be the same in every respect a user can see:
status, body, what the view saw as the caller, counters, audit records and signals. And the hot
path must have decided exactly the requests it is for, and left every other to the full path.
"""

from __future__ import annotations

import functools
import gc
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import flask
import pytest
from flask import Flask, jsonify

from flask_rbac_abac import (
    RBACABAC,
    Decision,
    Rule,
    UserAttributes,
    current_attributes,
    current_identity,
    invalidation,
    requires,
    requires_permission,
    requires_role,
    role,
    signals,
)
from flask_rbac_abac._names import HOT_PATH_KEY, STATE_KEY
from flask_rbac_abac.hotpath import hot_path
from flask_rbac_abac.identity import JWTVerifier
from flask_rbac_abac.rules import ALLOW, Context, Role
from flask_rbac_abac.store import store_attributes

from .conftest import JWT_SECRET, SERVICE, FakeIdP, bearer, library_config

AUDIT = "flask_rbac_abac.audit"
ACCOUNTANT, VIEWER, UNKNOWN = 1, 2, 99


class EvaluatedRole(Role):
    """A subclass of Role: its ``allows`` never answers for it, so it is always evaluated."""


class Broken(Rule):
    """A rule of the application's whose shortcut check raises."""

    def allows(self, user: UserAttributes) -> bool:
        raise LookupError("the application's own bug")

    def _evaluate(self, ctx: Context) -> Decision:
        return ALLOW

    def __repr__(self) -> str:
        return "Broken()"


def _caller() -> Any:
    user = current_identity._get_current_object()  # type: ignore[attr-defined]
    return jsonify(user=user, roles=sorted(current_attributes.roles))


def stamped(view: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator of the application's own, above the rule: it copies the rule wrapper's
    attributes (``functools.wraps``) and must still run, the hot path allowing or not."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return jsonify(stamped=True, view=view(*args, **kwargs).get_json())

    return wrapper


async def _async_caller() -> Any:
    return _caller()


#: path -> the rule decorators of its view, outermost first.
VIEWS: dict[str, tuple[Callable[[Any], Any], ...]] = {
    "/role": (requires_role("accountant"),),
    "/role-denied": (requires_role("admin"),),
    "/permission": (requires_permission("invoice:read"),),
    "/permission-denied": (requires_permission("invoice:delete"),),
    "/stacked": (requires_role("accountant", "viewer"), requires_permission("invoice:read")),
    "/stacked-denied": (requires_role("accountant"), requires_permission("invoice:delete")),
    "/either": (requires(role("accountant") | role("admin")),),
    "/either-second": (requires(role("admin") | role("accountant")),),
    "/subclass": (requires(EvaluatedRole("accountant")),),
    "/broken": (requires(Broken()),),
    "/resource": (requires(role("accountant"), resource=lambda: {"id": 7}),),
    "/stamped": (stamped, requires_role("accountant")),
    "/stamped-denied": (stamped, requires_role("admin")),
    "/async": (requires_role("accountant"),),
}
#: Paths whose view the application's own decorator wraps, above the rule.
STAMPED = {path for path, decorators in VIEWS.items() if stamped in decorators}
#: Paths whose view is ``async def``.
ASYNC = {"/async"}
#: What the hot path answers each rule of a path (outermost first) for a caller it knows (token
#: verified, attributes in L1): True where one of the library's rules allows. A path not listed:
#: False, for its one rule.
HOT = {
    "accountant": {
        "/role": [True],
        "/permission": [True],
        "/stacked": [True, True],
        "/stacked-denied": [True, False],
        "/either": [True],
        "/stamped": [True],
        "/async": [True],
    },
    "viewer": {"/stacked": [True, False]},
}


def rules_of(path: str) -> int:
    """How many rules protect ``path`` (its decorators but the application's own)."""
    return len([d for d in VIEWS[path] if d is not stamped])


def build(fake_idp: FakeIdP, key_prefix: str, rbac: RBACABAC) -> Flask:
    app = Flask(__name__)
    app.config.update(library_config(key_prefix))
    rbac.init_app(app, redis=fake_idp.client)
    for path, decorators in VIEWS.items():
        view: Callable[..., Any] = _async_caller if path in ASYNC else _caller
        for decorator in reversed(decorators):
            view = decorator(view)
        app.add_url_rule(
            path, path.strip("/"), view, methods=["GET", "OPTIONS"], provide_automatic_options=False
        )
    app.add_url_rule("/expiring", "expiring", requires_role("accountant")(_expiring))
    return app


def _expiring() -> Any:
    """Every cached token expires while this view runs, before it asks who the caller is."""
    flask.current_app.extensions[STATE_KEY].verifier._timer = lambda: DAY + 1.0
    return _caller()


@dataclass
class Served:
    """One app under test, and what its hot path answered (``None``: it was not asked)."""

    app: Flask
    rbac: RBACABAC
    idp: FakeIdP
    answers: list[bool] = field(default_factory=list)

    @property
    def state(self) -> Any:
        return self.app.extensions[STATE_KEY]

    def stats(self) -> dict[str, Any]:
        with self.app.app_context():
            return self.rbac.stats()


def served(fake_idp: FakeIdP, key_prefix: str, *, hot: bool) -> Served:
    rbac = RBACABAC()
    app = build(fake_idp, key_prefix, rbac)
    result = Served(app, rbac, fake_idp)
    inner = app.extensions.pop(HOT_PATH_KEY)
    if hot:

        def recording(
            rule: Rule, allowed: Callable[..., Any], missed: Callable[..., Any], /, *args: Any,
            **kwargs: Any,
        ) -> Any:  # fmt: skip
            def took(answer: bool, way: Callable[..., Any]) -> Callable[..., Any]:
                def on(*a: Any, **k: Any) -> Any:
                    result.answers.append(answer)
                    return way(*a, **k)

                return on

            return inner(rule, took(True, allowed), took(False, missed), *args, **kwargs)

        app.extensions[HOT_PATH_KEY] = recording
    return result


@pytest.fixture
def pair(fake_idp: FakeIdP, key_prefix: str) -> Iterator[tuple[Served, Served]]:
    # A receiver another test connected (weakly) and dropped may live until the next collection:
    # it would make every decision one somebody reads, and this module's hot cases full ones.
    gc.collect()
    assert not signals.decision_made.receivers, "a decision_made receiver leaked from a test"
    fake_idp.add(ACCOUNTANT, roles=["accountant"], permissions=["invoice:read"])
    fake_idp.add(VIEWER, roles=["viewer"], permissions=[])
    both = (served(fake_idp, key_prefix, hot=True), served(fake_idp, key_prefix, hot=False))
    yield both
    for one in both:
        with one.app.app_context():
            one.rbac.close(one.app)


COUNTED = ("l1_hits", "l1_misses", "l2_hits", "l2_misses", "auto_refreshes", "allowed", "denied")


def outcome(
    one: Served,
    path: str,
    headers: dict[str, str],
    method: str,
    caplog: pytest.LogCaptureFixture | None = None,
) -> dict[str, Any]:
    """Everything a user sees of one request: the answer, the counters moved, the calls made to
    the IdP; with ``caplog``, also the audit records and the signals sent (a ``decision_made``
    receiver connected: somebody reads the decisions). Without it, nobody listens: the hot
    path's own case."""
    before, asked = one.stats(), len(one.idp.requests)
    sent: list[dict[str, Any]] = []

    def receiver(sender: Flask, **extra: Any) -> None:
        sent.append({k: v for k, v in extra.items() if k != "rule"})

    if caplog is None:
        response = one.app.test_client().open(path, method=method, headers=headers)
    else:
        caplog.clear()
        with signals.decision_made.connected_to(receiver, one.app):
            response = one.app.test_client().open(path, method=method, headers=headers)
    after = one.stats()
    seen = {
        "status": response.status_code,
        "body": response.get_json(silent=True),
        "moved": {name: after[name] - before[name] for name in COUNTED},
        "idp": [r["body"] for r in one.idp.requests[asked:]],
    }
    if caplog is not None:
        seen["audit"] = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == AUDIT]
        seen["sent"] = sent
    return seen


#: Made at import, so valid for a day: a run (``make mutation`` above all) outlasts the default
#: five minutes.
DAY = int(time.time()) + 86400
ACCOUNTANT_TOKEN = bearer(ACCOUNTANT, exp=DAY)
VIEWER_TOKEN = bearer(VIEWER, exp=DAY)


def warm(one: Served) -> None:
    """The accountant's and the viewer's tokens verified, their attributes in L1."""
    client = one.app.test_client()
    for headers in (ACCOUNTANT_TOKEN, VIEWER_TOKEN):
        assert client.get("/role", headers=headers).status_code in (200, 403)


def token_expired(one: Served, _: FakeIdP) -> None:
    """Every cached token's ``exp`` in the past: the verifier must look at the token again."""
    cache = one.state.verifier._cache
    for header, (user_id, _exp) in list(cache.items()):
        cache[header] = (user_id, time.time() - 1)


def entry_due(one: Served, _: FakeIdP) -> None:
    entries = one.state.client.local.entries
    for user_id in (ACCOUNTANT, VIEWER):
        entry = entries.get((SERVICE, user_id))
        if entry is not None:
            entries[(SERVICE, user_id)] = entry._replace(due=0.0)


def evicted(one: Served, _: FakeIdP) -> None:
    for user_id in (ACCOUNTANT, VIEWER):
        one.state.client.local.evict_user(user_id)


def revoked(one: Served, fake_idp: FakeIdP) -> None:
    """The IdP's revocation of every role: Redis rewritten, then the eviction."""
    for user_id in (ACCOUNTANT, VIEWER):
        attrs = UserAttributes(user_id=user_id, service_name=SERVICE, roles=[], permissions=[])
        store_attributes(fake_idp.client, attrs, 3600, one.state.client.key_prefix)
        one.state.client.local.evict_user(user_id)


def loader(one: Served, _: FakeIdP) -> None:
    one.rbac.identity_loader(lambda: ACCOUNTANT)


def nothing(one: Served, _: FakeIdP) -> None:
    pass


CHANGES: dict[str, Callable[[Served, FakeIdP], None]] = {
    "nothing": nothing,
    "token expired": token_expired,
    "L1 entry due": entry_due,
    "L1 entry evicted": evicted,
    "role revoked": revoked,
    "identity loader": loader,
}
CALLERS = {
    "accountant": ACCOUNTANT_TOKEN,
    "viewer": VIEWER_TOKEN,
    "unknown user": bearer(UNKNOWN, exp=DAY),
    "no token": {},
    "not a token": {"Authorization": "Bearer not-a-token"},
}


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("caller", CALLERS)
def test_the_hot_path_answers_as_the_full_path(
    pair: tuple[Served, Served], fake_idp: FakeIdP, change: str, caller: str
) -> None:
    hot, full = pair
    for one in pair:
        warm(one)
    for path in VIEWS:
        for method in ("GET", "OPTIONS"):
            for one in pair:
                CHANGES[change](one, fake_idp)
            hot.answers.clear()
            seen = outcome(hot, path, CALLERS[caller], method)
            assert seen == outcome(full, path, CALLERS[caller], method), (path, method)
            fresh = change == "nothing" and caller in HOT and method == "GET"
            if path == "/resource":
                assert hot.answers == []  # a resource loader always takes the full path
            elif method == "OPTIONS" or change == "identity loader":
                assert hot.answers == [False] * rules_of(path)
            elif fresh:
                assert hot.answers == HOT[caller].get(path, [False]), path
            else:  # the outer rule goes the full way (an inner one may use what it loaded)
                assert hot.answers[0] is False, (path, method, hot.answers)
            if fresh and all(HOT[caller].get(path, [False])):
                body = {"user": ACCOUNTANT, "roles": ["accountant"]}
                if path in STAMPED:  # the application's decorator ran, above a hot allow
                    body = {"stamped": True, "view": body}
                assert seen["body"] == body
                assert seen["moved"]["l1_hits"] == 1
                assert seen["idp"] == []


@pytest.mark.parametrize(
    "listening", ["audit at DEBUG", "a decision_made receiver", "a forked process"]
)
def test_a_decision_somebody_reads_takes_the_full_path(
    pair: tuple[Served, Served],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    listening: str,
) -> None:
    hot, full = pair
    for one in pair:
        warm(one)
    if listening == "audit at DEBUG":
        caplog.set_level(logging.DEBUG, logger=AUDIT)
    elif listening == "a forked process":
        monkeypatch.setattr(invalidation, "generation", invalidation.generation + 1)
    # A forked process's first request starts its subscriber (the full path); then it is hot.
    paths = ("/role",) if listening == "a forked process" else ("/role", "/stacked", "/role-denied")
    for path in paths:
        hot.answers.clear()
        if listening == "a decision_made receiver":
            seen = outcome(hot, path, ACCOUNTANT_TOKEN, "GET", caplog)
            assert seen == outcome(full, path, ACCOUNTANT_TOKEN, "GET", caplog)
            assert len(seen["sent"]) == rules_of(path)
        else:
            seen = outcome(hot, path, ACCOUNTANT_TOKEN, "GET")
            assert seen == outcome(full, path, ACCOUNTANT_TOKEN, "GET")
        assert set(hot.answers) == {False}, path
    if listening == "audit at DEBUG":
        allows = [r for r in caplog.records if r.name == AUDIT and r.levelno == logging.DEBUG]
        assert len(allows) == 2 * (1 + 2)  # /role and /stacked, in both apps
    if listening == "a forked process":
        hot.answers.clear()
        assert hot.app.test_client().get("/role", headers=ACCOUNTANT_TOKEN).status_code == 200
        assert hot.answers == [True]


def test_a_hot_allow_is_counted_and_keeps_the_caller_for_the_request(
    pair: tuple[Served, Served],
) -> None:
    hot, _ = pair
    warm(hot)
    before = hot.stats()
    for _ in range(5):
        response = hot.app.test_client().get("/stacked", headers=ACCOUNTANT_TOKEN)
        assert response.json == {"user": ACCOUNTANT, "roles": ["accountant"]}
    after = hot.stats()
    # Each request: one L1 hit (the outer rule), two allows (both rules), nothing else.
    assert {name: after[name] - before[name] for name in COUNTED} == {
        "l1_hits": 5,
        "l1_misses": 0,
        "l2_hits": 0,
        "l2_misses": 0,
        "auto_refreshes": 0,
        "allowed": 10,
        "denied": 0,
    }
    assert hot.answers[-10:] == [True] * 10


def test_a_revocation_is_denied_on_the_next_request_after_hot_allows(
    pair: tuple[Served, Served], fake_idp: FakeIdP
) -> None:
    hot, _ = pair
    warm(hot)
    client = hot.app.test_client()
    for _ in range(3):
        assert client.get("/role", headers=ACCOUNTANT_TOKEN).status_code == 200
    assert hot.answers[-1] is True
    revoked(hot, fake_idp)
    response = client.get("/role", headers=ACCOUNTANT_TOKEN)
    assert response.status_code == 403
    assert response.json["reason"] == "no_roles"
    assert hot.answers[-1] is False


def test_an_app_without_a_token_verifier_has_no_hot_path(
    fake_idp: FakeIdP, key_prefix: str
) -> None:
    app = Flask(__name__)
    config = library_config(key_prefix)
    del config["RBAC_ABAC_JWT_SECRET"]
    app.config.update(config)
    rbac = RBACABAC()
    rbac.identity_loader(lambda: ACCOUNTANT)
    rbac.init_app(app, redis=fake_idp.client)
    assert HOT_PATH_KEY not in app.extensions
    with app.app_context():
        rbac.close(app)


# -- the boundaries, on a hot path built over clocks the test sets ----------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def clocked(one: Served, *, leeway: float = 0.0) -> tuple[Callable[[], bool], Clock, Clock, float]:
    """``one``'s hot path rebuilt over a verifier with ``leeway`` and two clocks the test sets:
    ``(ask, token_clock, l1_clock, exp)``; ``ask()`` asks it for /role, as the accountant, in a
    request of ``one``. The accountant's token is verified and his attributes are in L1, due at
    the L1 clock's 100.0."""
    state = one.state
    token_clock, l1_clock = Clock(time.time()), Clock(50.0)
    verifier = JWTVerifier(
        JWT_SECRET, "HS256", audience="rbac-abac", issuer="rbac-abac-idp", leeway=leeway,
        timer=token_clock,
    )  # fmt: skip
    header = ACCOUNTANT_TOKEN["Authorization"]
    assert verifier.user_id(header) == ACCOUNTANT
    exp = verifier._cache[header][1]
    warm(one)
    entries = state.client.local.entries
    entries[(SERVICE, ACCOUNTANT)] = entries[(SERVICE, ACCOUNTANT)]._replace(due=100.0)
    state.client._timer = l1_clock
    hot = hot_path(one.rbac, verifier, state.client)

    def ask() -> bool:
        with one.app.test_request_context("/role", headers=ACCOUNTANT_TOKEN):
            return bool(hot(role("accountant"), lambda: True, lambda: False))

    return ask, token_clock, l1_clock, exp


def test_a_token_is_hot_until_its_exp_and_not_at_it(pair: tuple[Served, Served]) -> None:
    ask, token_clock, _, exp = clocked(pair[0])
    token_clock.now = exp - 0.001
    assert ask() is True
    token_clock.now = exp  # the verifier's own bound: valid while now < exp + leeway
    assert ask() is False


def test_the_leeway_extends_a_token_past_its_exp(pair: tuple[Served, Served]) -> None:
    ask, token_clock, _, exp = clocked(pair[0], leeway=30.0)
    token_clock.now = exp + 29.0
    assert ask() is True
    token_clock.now = exp + 30.0
    assert ask() is False


def test_an_l1_entry_is_hot_until_it_is_due_and_not_at_it(pair: tuple[Served, Served]) -> None:
    ask, _, l1_clock, _ = clocked(pair[0])
    l1_clock.now = 99.999
    assert ask() is True
    l1_clock.now = 100.0  # the client's own bound: an entry is fresh while due > now
    assert ask() is False


def test_the_caller_stays_the_caller_for_the_whole_request(
    pair: tuple[Served, Served],
) -> None:
    """The hot path keeps the identity for the request, as the full path does: a token that
    expires while the view runs does not turn the caller anonymous half-way through."""
    hot, _ = pair
    warm(hot)

    hot.answers.clear()
    response = hot.app.test_client().get("/expiring", headers=ACCOUNTANT_TOKEN)
    assert hot.answers == [True]
    assert response.status_code == 200
    assert response.json == {"user": ACCOUNTANT, "roles": ["accountant"]}


def test_a_protected_view_runs_once_whichever_path_decides(
    pair: tuple[Served, Served], fake_idp: FakeIdP
) -> None:
    hot = pair[0]
    calls: list[int] = []

    @requires_role("accountant")
    def counted() -> Any:
        calls.append(1)
        return _caller()

    hot.app.add_url_rule("/counted", "counted", counted)
    client = hot.app.test_client()

    def served_once(status: int, answers: list[bool]) -> None:
        calls.clear()
        hot.answers.clear()
        assert client.get("/counted", headers=ACCOUNTANT_TOKEN).status_code == status
        assert len(calls) == (1 if status == 200 else 0)
        assert hot.answers == answers

    served_once(200, [False])  # the first request: nothing cached, the full path
    served_once(200, [True])  # the hot path
    entry_due(hot, fake_idp)
    served_once(200, [False])  # due: the full path looks again, the view runs once
    revoked(hot, fake_idp)
    served_once(403, [False])  # the full path denies; the view never runs


def test_the_stored_view_is_named_and_documented_as_the_view(pair: tuple[Served, Served]) -> None:
    hot = pair[0]

    @requires_role("accountant")
    def inline() -> Any:
        """The view's own text."""
        return _caller()

    @requires(role("accountant"), resource=lambda: flask.abort(404))
    def loaded() -> Any:
        return _caller()

    @requires_role("accountant")
    async def awaited() -> Any:
        return _caller()

    hot.app.add_url_rule("/inline", "inline", inline)
    hot.app.add_url_rule("/loaded", "loaded", loaded)
    hot.app.add_url_rule("/awaited", "awaited", awaited)
    warm(hot)  # the first request judged the views
    client = hot.app.test_client()
    for path, status in (("/loaded", 404), ("/awaited", 200)):  # neither bound: each its wrapper
        for _ in range(2):  # the second time, the caller is known: a hot path would answer
            assert client.get(path, headers=ACCOUNTANT_TOKEN).status_code == status, path
        endpoint = path.strip("/")
        assert hot.app.view_functions[endpoint] is hot.app.view_functions.get(endpoint)
    for endpoint in ("inline", "role", "stamped", "async", "resource"):
        stored, registered = hot.app.view_functions[endpoint], hot.app.view_functions.get(endpoint)
        assert (stored.__name__, stored.__doc__) == (registered.__name__, registered.__doc__)
    assert hot.app.view_functions["inline"].__doc__ == "The view's own text."
    assert hot.app.view_functions["inline"] is not inline  # bound to the hot path
    assert hot.app.view_functions["async"] is hot.app.view_functions.get("async")  # its wrapper
    hot.answers.clear()
    assert hot.app.test_client().get("/inline", headers=ACCOUNTANT_TOKEN).status_code == 200
    assert hot.answers == [True]


def _echo(*args: Any, **kwargs: Any) -> Any:
    return jsonify(args=list(args), kwargs=kwargs, user=current_identity._get_current_object())  # type: ignore[attr-defined]


async def _async_echo(*args: Any, **kwargs: Any) -> Any:
    return _echo(*args, **kwargs)


@pytest.mark.parametrize(
    "case",
    ["hot", "first token", "L1 entry due", "evaluated rule", "OPTIONS", "async", "async due"],
)
def test_the_stored_view_passes_its_arguments_on_whichever_path_decides(
    pair: tuple[Served, Served], fake_idp: FakeIdP, case: str
) -> None:
    """Flask calls a view with keyword arguments only; code that calls ``app.view_functions``
    itself may pass positional ones too. The view gets both, however the request is decided."""
    hot = pair[0]
    rule = (
        requires(EvaluatedRole("accountant"))
        if case == "evaluated rule"
        else requires_role("accountant")
    )
    hot.app.add_url_rule(
        "/echo/<int:item>", "echo", rule(_async_echo if "async" in case else _echo),
        methods=["GET", "OPTIONS"],
        provide_automatic_options=False,
    )  # fmt: skip
    warm(hot)
    headers = ACCOUNTANT_TOKEN
    if case == "first token":
        headers = bearer(ACCOUNTANT, exp=DAY, jti="never-seen")  # not verified yet
    elif case in ("L1 entry due", "async due"):
        entry_due(hot, fake_idp)
    method = "OPTIONS" if case == "OPTIONS" else "GET"
    hot.answers.clear()
    with hot.app.test_request_context("/echo/7", method=method, headers=headers):
        response = hot.app.view_functions["echo"]("positional", item=7)
    assert response.get_json() == {
        "args": ["positional"],
        "kwargs": {"item": 7},
        "user": ACCOUNTANT,  # OPTIONS passes through; the view may still ask who calls
    }
    assert hot.answers == [case in ("hot", "async")]

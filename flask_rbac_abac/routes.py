"""How each view is protected: what the route guard and ``rbac-abac routes`` both ask.

A view is *protected* when a rule decorator wraps the function the app registered, *public* when
it carries the :func:`~flask_rbac_abac.public` marker, and *unprotected* otherwise.

A rule decorator placed above the route decorator (``@requires_role("x")`` over
``@app.get("/p")``) wraps a function the app never calls: the route decorator had already
registered the bare function, and nothing would run the rule. :func:`record_wrapped` (called by
``requires`` for every function it wraps) remembers those inner functions, so a registered view
that some rule decorator wrapped is recognised as *misplaced*: it is refused whatever the
configuration, never served.

A view of a blueprint protected as a whole (:func:`~flask_rbac_abac.protect_blueprint`, on the
blueprint or on one it is nested in) is protected by that blueprint's rules too:
:func:`blueprint_rules` finds them from the endpoint's blueprint names.

Class-based views count as protected when their ``decorators`` hold a rule, or when the handler
of the request's method (``get``, ``post``, ... on a ``MethodView``; ``dispatch_request`` on a
``View``) carries one. Flask's static file views are not views to guard.

The guard itself costs nothing per request: :class:`GuardedViews` (the app's
``view_functions``) judges each view once (:func:`refused_methods`) and stores only a refused
one wrapped, so an open or a protected route is dispatched as Flask would without the extension.
"""

from __future__ import annotations

import enum
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask.views import MethodView

from ._names import PASS_THROUGH_METHODS, PUBLIC_ATTR, RULES_ATTR

if TYPE_CHECKING:
    from .rules import Rule

#: How far down a ``__wrapped__`` chain :func:`record_wrapped` looks (a cycle must end).
_MAX_CHAIN = 32

# Functions a rule decorator has wrapped. Weak, so a function (and a test's app) can go away.
_wrapped: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()


class Protection(enum.Enum):
    """What stands in front of a view."""

    PROTECTED = "protected"
    PUBLIC = "public"
    UNPROTECTED = "unprotected"
    MISPLACED = "misplaced"
    STATIC = "static"


@dataclass(frozen=True)
class ViewProtection:
    """The protection of one view for one HTTP method, and the rules when it has some."""

    kind: Protection
    rules: tuple[Rule, ...] = ()

    def describe(self) -> str:
        """One line for humans: the rules, ``public``, ``UNPROTECTED``, ``MISPLACED RULE``."""
        if self.kind is Protection.PROTECTED:
            return " & ".join(map(repr, self.rules))
        return {
            Protection.PUBLIC: "public",
            Protection.UNPROTECTED: "UNPROTECTED",
            Protection.MISPLACED: "MISPLACED RULE (the rule decorator is above the route "
            "decorator, so it never runs; the route is refused)",
            Protection.STATIC: "static files (not guarded)",
        }[self.kind]


def record_wrapped(view: Callable[..., Any]) -> None:
    """Remember that a rule decorator wrapped ``view`` (so ``view`` must not be a route).

    The functions ``view`` itself wraps (its ``__wrapped__`` chain, as ``functools.wraps`` sets
    it) are remembered too: ``@requires_role("x") @other_decorator @app.get("/p")`` registered
    the innermost function, and the rule above it never runs either.
    """
    current: Any = view
    for _ in range(_MAX_CHAIN):
        try:
            _wrapped.add(current)
        except TypeError:  # cannot be weakly referenced (a builtin): Flask cannot route to it
            pass
        current = getattr(current, "__wrapped__", None)
        if current is None:
            return


def view_name(view: Callable[..., Any] | None) -> str:
    """``module.qualname`` of a view, for log lines and the routes listing."""
    module = getattr(view, "__module__", None) or "?"
    return f"{module}.{getattr(view, '__qualname__', repr(view))}"


def _is_wrapped(view: Callable[..., Any]) -> bool:
    try:
        return view in _wrapped
    except TypeError:
        return False


def _is_static(endpoint: str, view: Callable[..., Any]) -> bool:
    """Flask's own static file view (of the app or of a blueprint), registered by Flask."""
    flask_made = (getattr(view, "__module__", None) or "").startswith("flask.")
    return flask_made and (endpoint == "static" or endpoint.endswith(".static"))


def _handler(view_class: type, method: str) -> Callable[..., Any] | None:
    """The method of a class-based view that answers ``method``."""
    if issubclass(view_class, MethodView):
        handler = getattr(view_class, method.lower(), None)
        if handler is None and method == "HEAD":
            handler = getattr(view_class, "get", None)
        return handler
    return getattr(view_class, "dispatch_request", None)


def _public(obj: object) -> bool:
    return getattr(obj, PUBLIC_ATTR, False) is True


def blueprint_rules(blueprints: Mapping[str, object], endpoint: str) -> tuple[Rule, ...]:
    """The rules of the protected blueprints ``endpoint`` belongs to (outermost first).

    :param blueprints: the app's ``app.blueprints`` (nested ones under their dotted names).
    """
    rules: tuple[Rule, ...] = ()
    parts = endpoint.split(".")[:-1]  # "admin.users.show" -> blueprints "admin", "admin.users"
    for depth in range(1, len(parts) + 1):
        blueprint = blueprints.get(".".join(parts[:depth]))
        rules = (*rules, *getattr(blueprint, RULES_ATTR, ()))
    return rules


def classify(
    endpoint: str,
    view: Callable[..., Any] | None,
    method: str,
    inherited: tuple[Rule, ...] = (),
) -> ViewProtection:
    """How ``view`` (``app.view_functions[endpoint]``) is protected for ``method``.

    :param inherited: the rules of its protected blueprints (:func:`blueprint_rules`).
    """
    if view is None:
        return ViewProtection(Protection.UNPROTECTED)
    if _is_static(endpoint, view):
        return ViewProtection(Protection.STATIC)
    if _is_wrapped(view):
        return ViewProtection(Protection.MISPLACED)
    rules: tuple[Rule, ...] = (*inherited, *getattr(view, RULES_ATTR, ()))
    marked: list[object] = [view]
    view_class = getattr(view, "view_class", None)
    if isinstance(view_class, type):
        handler = _handler(view_class, method)
        rules = (*rules, *getattr(handler, RULES_ATTR, ()))
        marked += [view_class, handler]
    if rules:
        return ViewProtection(Protection.PROTECTED, rules)
    if any(map(_public, marked)):
        return ViewProtection(Protection.PUBLIC)
    return ViewProtection(Protection.UNPROTECTED)


def refused_methods(
    endpoint: str,
    view: Callable[..., Any],
    url_map: Any,
    blueprints: Mapping[str, object],
    required: bool,
) -> dict[str, Protection]:
    """The methods of ``endpoint``'s routes that the route guard refuses, with why.

    A misplaced rule is refused always; an unprotected view when ``required``
    (``RBAC_ABAC_REQUIRE_AUTHORIZATION``). ``OPTIONS`` always passes (CORS preflights).
    """
    inherited = blueprint_rules(blueprints, endpoint)
    methods = {m for rule in url_map.iter_rules(endpoint) for m in rule.methods or ()}
    refused: dict[str, Protection] = {}
    for method in methods - PASS_THROUGH_METHODS:
        kind = classify(endpoint, view, method, inherited).kind
        if kind is Protection.MISPLACED or (kind is Protection.UNPROTECTED and required):
            refused[method] = kind
    return refused


class GuardedViews(dict[str, Callable[..., Any]]):
    """An app's ``view_functions`` with the route guard in it (the extension installs it).

    Flask looks the view up here on every request. A view with a method the guard refuses is
    stored wrapped by ``judge`` (which returns the view itself when nothing is refused), so an
    open or a protected route costs nothing extra: no before-request hook runs. ``get`` answers
    with the view as registered: Flask compares it when a function is registered again, and
    ``flask rbac-abac routes`` classifies it.

    Views are judged at the app's first request (:meth:`judge_all`), once every decorator has
    run (a rule decorator above the route decorator wraps the function only after the route
    decorator registered it), and after that whenever one is set.
    """

    def __init__(
        self,
        views: Mapping[str, Callable[..., Any]],
        judge: Callable[[str, Callable[..., Any]], Callable[..., Any]],
    ) -> None:
        super().__init__(views)
        self.registered: dict[str, Callable[..., Any]] = dict(views)
        self._judge = judge
        self._lock = threading.Lock()
        self.judged = False

    def get(self, endpoint: str, default: Any = None) -> Any:
        return self.registered.get(endpoint, default)

    def __setitem__(self, endpoint: str, view: Callable[..., Any]) -> None:
        self.registered[endpoint] = view
        super().__setitem__(endpoint, self._judge(endpoint, view) if self.judged else view)

    def __delitem__(self, endpoint: str) -> None:
        del self.registered[endpoint]
        super().__delitem__(endpoint)

    def judge_all(self) -> None:
        """Judge every registered view (the first request; idempotent, thread-safe)."""
        with self._lock:
            if self.judged:
                return
            for endpoint, view in self.registered.items():
                super().__setitem__(endpoint, self._judge(endpoint, view))
            self.judged = True

"""Authorization rules: small objects that compose with ``&``, ``|`` and ``~``.

A rule looks at the caller's :class:`UserAttributes`, the resource (whatever the view's
``resource`` loader returned) and the request environment, and returns a :class:`Decision`.

Evaluation is three-valued: *allow*, *deny* or *error*. A leaf errs when its code raises, when a
predicate or an attribute check returns anything but a bool, or when :func:`attribute` compares
values of unlike types. An error is never turned into a grant: ``&``, ``|`` and ``~`` stop at the
first error they see and hand it up unchanged, so the whole rule denies with ``rule_error``
whatever wraps the failing leaf. Children are evaluated left to right and short-circuit as in
Python (``a | b`` does not look at ``b`` when ``a`` allows): a leaf that was not evaluated
cannot err. Without the error value, ``~(role("banned") | predicate(raises))`` used to allow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, NamedTuple, cast

from .enforcement import enforce, protect
from .model import UserAttributes

log = logging.getLogger(__name__)

_MISSING = object()

#: The code of an error decision: the rule could not be evaluated, so it denies.
RULE_ERROR = "rule_error"


@dataclass(frozen=True)
class Decision:
    """The outcome of a rule: ``allowed``, a human ``reason`` and a machine ``code``.

    A decision with the code :data:`RULE_ERROR` is the third value, *error*: it denies, and no
    combinator turns it into anything else. It cannot be built with ``allowed=True``.
    """

    allowed: bool
    reason: str = ""
    code: str = ""

    def __post_init__(self) -> None:
        if self.allowed and self.code == RULE_ERROR:
            raise ValueError(f"a decision with code {RULE_ERROR!r} cannot allow")

    @property
    def error(self) -> bool:
        """True when the rule failed (a leaf raised or compared unlike types)."""
        return self.code == RULE_ERROR

    @property
    def outcome(self) -> Literal["allow", "deny", "error"]:
        """The three-valued result: ``allow``, ``deny`` or ``error``."""
        if self.allowed:
            return "allow"
        return "error" if self.error else "deny"


ALLOW = Decision(True, "allowed", "allowed")
#: The error decision every failure ends as (its reason stays generic; the log has the detail).
ERROR = Decision(False, "the authorization rule failed", RULE_ERROR)


class UnlikeTypes(TypeError):
    """:func:`attribute` was asked to compare values of different JSON types."""


class NotABool(TypeError):
    """A predicate or an attribute check returned something other than ``True`` or ``False``."""


def _kind(value: object) -> str:
    """The JSON type of ``value``; bool is not a number here, int and float are both numbers."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__qualname__


def strictly_equal(value: object, expected: object) -> bool:
    """``value == expected`` without Python's cross-type equalities.

    ``True == 1`` and ``False == 0`` hold in Python; here a bool only equals a bool. Numbers
    compare as numbers (``1`` equals ``1.0``: JSON does not tell them apart), lists and tuples
    compare element by element, mappings key by key.

    :raises UnlikeTypes: when the two values (or two elements at the same place) are of
        different JSON types: the rule is wrong for this data, which is an error, not a "no".
    """
    kind, expected_kind = _kind(value), _kind(expected)
    if kind != expected_kind:
        # Types only: attribute values are the user's data and stay out of the logs.
        raise UnlikeTypes(f"cannot compare a {kind} with a {expected_kind}")
    if kind == "array":
        left, right = cast("Sequence[object]", value), cast("Sequence[object]", expected)
        return len(left) == len(right) and all(map(strictly_equal, left, right))
    if kind == "object":
        lmap, rmap = cast("Mapping[str, object]", value), cast("Mapping[str, object]", expected)
        return lmap.keys() == rmap.keys() and all(strictly_equal(lmap[k], rmap[k]) for k in lmap)
    return value == expected


def _as_bool(result: object, what: str) -> bool:
    if not isinstance(result, bool):
        raise NotABool(f"{what} returned a {type(result).__name__}, not a bool")
    return result


class Context(NamedTuple):
    """What a rule may look at: the caller, the resource, and the request it came with.

    Immutable (one is built per protected request, so it is a cheap named tuple).
    """

    user: UserAttributes
    resource: Any = None
    request: Any = None

    @property
    def environment(self) -> Mapping[str, Any]:
        """Method, path, endpoint and remote address of the request (``{}`` without one)."""
        req = self.request
        if req is None:
            return {}
        return {
            "method": req.method,
            "path": req.path,
            "endpoint": req.endpoint,
            "remote_addr": req.remote_addr,
        }


class Rule:
    """Base class: subclasses implement :meth:`_evaluate`."""

    #: A plain :class:`Role`'s names, as a set: the rule surely allows a user who holds one of
    #: them. ``None`` for every other rule (ask :meth:`allows`). The hot path tests it inline.
    any_role: frozenset[str] | None = None

    def _evaluate(self, ctx: Context) -> Decision:
        raise NotImplementedError

    def evaluate(self, ctx: Context) -> Decision:
        """The decision for ``ctx``; an exception inside the rule is the error decision."""
        try:
            decision = self._evaluate(ctx)
        except (UnlikeTypes, NotABool) as exc:
            log.error("authorization rule %r failed: %s; denying", self, exc)
            return ERROR
        except Exception:
            log.exception("authorization rule %r raised; denying", self)
            return ERROR
        if not isinstance(decision, Decision):
            log.error("authorization rule %r returned %r, not a Decision; denying", self, decision)
            return ERROR
        return decision

    def allows(self, user: UserAttributes) -> bool:
        """True only when this rule surely allows ``user``, from the user's roles and
        permissions alone, running no code of the application's; ``False`` means "evaluate it".

        The extension asks this first on each request (a role check costs no :class:`Context`
        and no :class:`Decision`), and evaluates the rule when it says ``False``. So it must never
        say ``True`` where :meth:`evaluate` would not allow; a subclass that overrides
        :meth:`_evaluate` keeps this default.
        """
        return False

    def __and__(self, other: Rule) -> Rule:
        return AllOf(self, other)

    def __or__(self, other: Rule) -> Rule:
        return AnyOf(self, other)

    def __invert__(self) -> Rule:
        return Not(self)

    # A rule is also a view decorator and a context manager (see enforcement.py).
    def __call__(self, view: Callable[..., Any]) -> Callable[..., Any]:
        return protect(self)(view)

    def __enter__(self) -> Rule:
        enforce(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


def _no_roles(ctx: Context) -> Decision | None:
    if not ctx.user.roles:
        return Decision(False, f"user has no roles in service {ctx.user.service_name}", "no_roles")
    return None


class _Names(Rule):
    """A rule over a non-empty list of role or permission names."""

    kind = ""

    def __init__(self, *names: str) -> None:
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"{self.kind}() needs at least one {self.kind} name")
        self.names = names

    def __repr__(self) -> str:
        return f"{self.kind}({', '.join(map(repr, self.names))})"


class Role(_Names):
    """Holds any one of ``names``."""

    kind = "role"

    def __init__(self, *names: str) -> None:
        super().__init__(*names)
        if type(self) is Role:  # a subclass may evaluate differently
            self.any_role = frozenset(names)

    def allows(self, user: UserAttributes) -> bool:
        return self.any_role is not None and not self.any_role.isdisjoint(user.roles)

    def _evaluate(self, ctx: Context) -> Decision:
        roles = ctx.user.roles
        for name in self.names:
            if name in roles:
                return ALLOW
        return _no_roles(ctx) or Decision(
            False, f"missing role: one of {', '.join(self.names)}", "missing_role"
        )


class Permission(_Names):
    """Holds every one of ``names``."""

    kind = "permission"

    def allows(self, user: UserAttributes) -> bool:
        if type(self) is not Permission:  # a subclass may evaluate differently
            return False
        held = user.permissions
        for name in self.names:
            if name not in held:
                return False
        return True

    def _evaluate(self, ctx: Context) -> Decision:
        held = ctx.user.permissions
        missing = [p for p in self.names if p not in held]
        if not missing:
            return ALLOW
        return _no_roles(ctx) or Decision(
            False, f"missing permission: {', '.join(missing)}", "missing_permission"
        )


class Attribute(Rule):
    """The attribute ``name`` equals ``expected`` (:func:`strictly_equal`), or satisfies it when
    it is callable (``expected(value)`` must return a bool)."""

    def __init__(self, name: str, expected: Any) -> None:
        self.name = name
        self.expected = expected

    def _evaluate(self, ctx: Context) -> Decision:
        value = ctx.user.get(self.name, _MISSING)
        if value is _MISSING:
            return Decision(False, f"missing attribute: {self.name}", "missing_attribute")
        if callable(self.expected):
            ok = _as_bool(self.expected(value), f"the check of attribute {self.name}")
        else:
            ok = strictly_equal(value, self.expected)
        if ok:
            return ALLOW
        return Decision(
            False, f"attribute {self.name} does not satisfy the rule", "attribute_mismatch"
        )

    def __repr__(self) -> str:
        return f"attribute({self.name!r}, {self.expected!r})"


class Predicate(Rule):
    """ABAC over user, resource and environment: ``fn(user, resource)`` or
    ``fn(user, resource, environment)`` returns ``True`` (allow) or ``False`` (deny); anything
    else it returns, or raises, is an error."""

    def __init__(self, fn: Callable[..., Any], reason: str, *, with_environment: bool = False):
        self.fn = fn
        self.reason = reason
        self.with_environment = with_environment

    def _evaluate(self, ctx: Context) -> Decision:
        if self.with_environment:
            ok = self.fn(ctx.user, ctx.resource, ctx.environment)
        else:
            ok = self.fn(ctx.user, ctx.resource)
        if _as_bool(ok, f"predicate {self.reason!r}"):
            return ALLOW
        return Decision(False, self.reason, "predicate_failed")

    def __repr__(self) -> str:
        return f"predicate({self.reason!r})"


class AllOf(Rule):
    """``a & b``: the first denial or error, else allow."""

    def __init__(self, *rules: Rule) -> None:
        self.rules = rules

    def allows(self, user: UserAttributes) -> bool:
        return type(self) is AllOf and all(rule.allows(user) for rule in self.rules)

    def _evaluate(self, ctx: Context) -> Decision:
        for rule in self.rules:
            decision = rule.evaluate(ctx)
            if not decision.allowed:
                return decision  # a denial or an error: either way the rest cannot allow
        return ALLOW

    def __repr__(self) -> str:
        return "(" + " & ".join(map(repr, self.rules)) + ")"


class AnyOf(Rule):
    """``a | b``: allow at the first allow, error at the first error, else every denial."""

    def __init__(self, *rules: Rule) -> None:
        self.rules = rules

    def allows(self, user: UserAttributes) -> bool:
        # Only the first alternative: it is evaluated first, so when it allows nothing else is
        # looked at; a later one is reached only past denials of the earlier ones (or an error).
        return type(self) is AnyOf and bool(self.rules) and self.rules[0].allows(user)

    def _evaluate(self, ctx: Context) -> Decision:
        denials = []
        for rule in self.rules:
            decision = rule.evaluate(ctx)
            if decision.allowed or decision.error:
                # An error is not a "no" to try the next alternative after: it stops here, so
                # that nothing above (a ``~``) can read it as a denial and invert it.
                return decision
            denials.append(decision)
        return Decision(False, "; ".join(d.reason for d in denials), denials[0].code)

    def __repr__(self) -> str:
        return "(" + " | ".join(map(repr, self.rules)) + ")"


class Not(Rule):
    """``~a``: allow becomes deny and deny allow; an error stays an error."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    def _evaluate(self, ctx: Context) -> Decision:
        decision = self.rule.evaluate(ctx)
        if decision.error:
            return decision
        if decision.allowed:
            return Decision(False, f"denied by not {self.rule!r}", "negated")
        return ALLOW

    def __repr__(self) -> str:
        return f"~{self.rule!r}"


def role(*names: str) -> Rule:
    """The caller holds any one of the roles ``names``."""
    return Role(*names)


def permission(*names: str) -> Rule:
    """The caller holds every one of the permissions ``names``."""
    return Permission(*names)


def attribute(name: str, expected: Any) -> Rule:
    """The caller's attribute ``name`` equals ``expected`` (or ``expected(value)`` is True).

    Equality is :func:`strictly_equal`: ``attribute("active", True)`` does not match ``1`` and
    ``attribute("level", 1)`` does not match ``True``; values of unlike types are an error.
    """
    return Attribute(name, expected)


def predicate(
    fn: Callable[..., Any], reason: str = "denied by policy", *, with_environment: bool = False
) -> Rule:
    """A free ABAC rule: ``fn(user, resource)`` (plus ``environment`` when asked) is True."""
    return Predicate(fn, reason, with_environment=with_environment)

"""Authorization rules: small objects that compose with ``&``, ``|`` and ``~``.

A rule looks at the caller's :class:`UserAttributes`, the resource (whatever the view's
``resource`` loader returned) and the request environment, and returns a :class:`Decision`. Any
exception raised inside a rule is a denial, logged: unknown is never allowed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from types import TracebackType
from typing import Any

from .codec import UserAttributes

log = logging.getLogger(__name__)

_MISSING = object()


@dataclass(frozen=True)
class Decision:
    """The outcome of a rule: ``allowed``, a human ``reason`` and a machine ``code``."""

    allowed: bool
    reason: str = ""
    code: str = ""


ALLOW = Decision(True, "allowed", "allowed")


@dataclass(frozen=True)
class Context:
    """What a rule may look at: the caller, the resource, and the request it came with."""

    user: UserAttributes
    resource: Any = None
    request: Any = None

    @cached_property
    def environment(self) -> Mapping[str, Any]:
        """Method, path, endpoint and remote address of the request (built on first use)."""
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

    def _evaluate(self, ctx: Context) -> Decision:
        raise NotImplementedError

    def evaluate(self, ctx: Context) -> Decision:
        """The decision for ``ctx``; an exception inside the rule denies."""
        try:
            return self._evaluate(ctx)
        except Exception:
            log.exception("authorization rule %r raised; denying", self)
            return Decision(False, "the authorization rule failed", "rule_error")

    def __and__(self, other: Rule) -> Rule:
        return AllOf(self, other)

    def __or__(self, other: Rule) -> Rule:
        return AnyOf(self, other)

    def __invert__(self) -> Rule:
        return Not(self)

    # A rule is also a view decorator and a context manager (see decorators.py).
    def __call__(self, view: Callable[..., Any]) -> Callable[..., Any]:
        from .decorators import requires

        return requires(self)(view)

    def __enter__(self) -> Rule:
        from .decorators import enforce

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
        return f"{self.kind}{self.names!r}"


class Role(_Names):
    """Holds any one of ``names``."""

    kind = "role"

    def _evaluate(self, ctx: Context) -> Decision:
        if ctx.user.has_role(*self.names):
            return ALLOW
        return _no_roles(ctx) or Decision(
            False, f"missing role: one of {', '.join(self.names)}", "missing_role"
        )


class Permission(_Names):
    """Holds every one of ``names``."""

    kind = "permission"

    def _evaluate(self, ctx: Context) -> Decision:
        missing = [p for p in self.names if not ctx.user.has_permission(p)]
        if not missing:
            return ALLOW
        return _no_roles(ctx) or Decision(
            False, f"missing permission: {', '.join(missing)}", "missing_permission"
        )


class Attribute(Rule):
    """The attribute ``name`` equals ``expected``, or satisfies it when it is callable."""

    def __init__(self, name: str, expected: Any) -> None:
        self.name = name
        self.expected = expected

    def _evaluate(self, ctx: Context) -> Decision:
        value = ctx.user.get(self.name, _MISSING)
        if value is _MISSING:
            return Decision(False, f"missing attribute: {self.name}", "missing_attribute")
        ok = self.expected(value) if callable(self.expected) else value == self.expected
        if ok is True:
            return ALLOW
        return Decision(
            False, f"attribute {self.name} does not satisfy the rule", "attribute_mismatch"
        )

    def __repr__(self) -> str:
        return f"attribute({self.name!r}, {self.expected!r})"


class Predicate(Rule):
    """ABAC over user, resource and environment: ``fn(user, resource)`` or
    ``fn(user, resource, environment)`` must return exactly ``True``."""

    def __init__(self, fn: Callable[..., Any], reason: str, *, with_environment: bool = False):
        self.fn = fn
        self.reason = reason
        self.with_environment = with_environment

    def _evaluate(self, ctx: Context) -> Decision:
        if self.with_environment:
            ok = self.fn(ctx.user, ctx.resource, ctx.environment)
        else:
            ok = self.fn(ctx.user, ctx.resource)
        return ALLOW if ok is True else Decision(False, self.reason, "predicate_failed")

    def __repr__(self) -> str:
        return f"predicate({self.reason!r})"


class AllOf(Rule):
    def __init__(self, *rules: Rule) -> None:
        self.rules = rules

    def _evaluate(self, ctx: Context) -> Decision:
        for rule in self.rules:
            decision = rule.evaluate(ctx)
            if not decision.allowed:
                return decision
        return ALLOW

    def __repr__(self) -> str:
        return "(" + " & ".join(map(repr, self.rules)) + ")"


class AnyOf(Rule):
    def __init__(self, *rules: Rule) -> None:
        self.rules = rules

    def _evaluate(self, ctx: Context) -> Decision:
        denials = []
        for rule in self.rules:
            decision = rule.evaluate(ctx)
            if decision.allowed:
                return ALLOW
            denials.append(decision)
        return Decision(False, "; ".join(d.reason for d in denials), denials[0].code)

    def __repr__(self) -> str:
        return "(" + " | ".join(map(repr, self.rules)) + ")"


class Not(Rule):
    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    def _evaluate(self, ctx: Context) -> Decision:
        decision = self.rule.evaluate(ctx)
        if decision.code == "rule_error":
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
    """The caller's attribute ``name`` equals ``expected`` (or ``expected(value)`` is True)."""
    return Attribute(name, expected)


def predicate(
    fn: Callable[..., Any], reason: str = "denied by policy", *, with_environment: bool = False
) -> Rule:
    """A free ABAC rule: ``fn(user, resource)`` (plus ``environment`` when asked) is True."""
    return Predicate(fn, reason, with_environment=with_environment)

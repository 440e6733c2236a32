"""View decorators and request-scoped accessors.

``@requires(rule, resource=...)`` marks a view as protected (the before-request hook then loads the
caller's attributes) and evaluates ``rule`` with the resource the loader returns for the view's
arguments. ``OPTIONS`` requests pass through so CORS preflights work. ``@public`` marks a view
that deliberately has no rule (see ``RBAC_ABAC_REQUIRE_AUTHORIZATION``).

A rule decorator goes *below* the route decorator, so that the app registers the protected
wrapper. Each function ``requires`` wraps is recorded (:func:`routes.record_wrapped`): when the
app registered that inner function instead, the route is refused as misplaced. The wrapping
itself lives in :mod:`.enforcement`, below :mod:`.rules`, because a rule is a decorator too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Blueprint, request
from werkzeug.local import LocalProxy

from ._names import (
    PASS_THROUGH_METHODS,
    PUBLIC_ATTR,
    RULES_ATTR,
)
from .enforcement import F, enforce, extension, protect
from .model import UserAttributes
from .rules import Context, Rule, attribute, permission, role

V = TypeVar("V")


def _current_attributes() -> UserAttributes:
    return cast(UserAttributes, extension().load_current_attributes())


def _current_identity() -> int | str:
    return cast("int | str", extension().load_identity())


#: The caller's :class:`UserAttributes` (loaded on first use; 401/403/503 when it cannot be).
current_attributes: UserAttributes = cast(UserAttributes, LocalProxy(_current_attributes))
#: The caller's user id, as resolved by the identity loader.
current_identity: int | str = cast("int | str", LocalProxy(_current_identity))


def requires(rule: Rule, *, resource: Callable[..., Any] | None = None) -> Callable[[F], F]:
    """Protect a view with ``rule``.

    :param resource: called with the view's keyword arguments; its result is the ``resource``
        that ABAC predicates see. An HTTP error it raises (e.g. 404) passes through; any other
        exception denies.
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"requires() needs a rule, got {type(rule).__name__}")
    return protect(rule, resource)


def protect_blueprint(blueprint: Blueprint, rule: Rule) -> Blueprint:
    """Protect every view of ``blueprint`` (and of blueprints nested in it) with ``rule``.

    Call it before the blueprint is registered. The rule runs before each request to one of its
    views (``OPTIONS`` passes, for CORS preflights), after the extension has loaded the caller's
    attributes: 401, 403 or 503 as for ``@requires``. A view's own rule decorators still apply
    on top (both must allow), and ``@public`` does not exempt a view of a protected blueprint.
    The route guard (``RBAC_ABAC_REQUIRE_AUTHORIZATION``) and ``flask rbac-abac routes`` count
    its views as protected by the rule. Calling it again adds a rule (all must allow).

    :returns: ``blueprint``, so ``admin = protect_blueprint(Blueprint(...), role("admin"))``.
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"protect_blueprint() needs a rule, got {type(rule).__name__}")

    def check_blueprint_rule() -> None:
        if request.method not in PASS_THROUGH_METHODS:
            enforce(rule)

    blueprint.before_request(check_blueprint_rule)
    setattr(blueprint, RULES_ATTR, (*getattr(blueprint, RULES_ATTR, ()), rule))
    return blueprint


def public(view: V) -> V:
    """Mark a view function or a class-based view as deliberately open to everyone.

    With ``RBAC_ABAC_REQUIRE_AUTHORIZATION`` on, a view with neither a rule nor this marker is
    refused (403 ``no_rule``); ``flask rbac-abac routes`` lists it as ``public``. A view that
    authorizes inside its body (``enforce(rule)`` or ``with rule:``) needs the marker too.
    """
    setattr(view, PUBLIC_ATTR, True)
    return view


def requires_role(*roles: str) -> Callable[[F], F]:
    """The caller holds any one of ``roles`` in this service."""
    return requires(role(*roles))


def requires_permission(*permissions: str) -> Callable[[F], F]:
    """The caller holds every one of ``permissions`` in this service."""
    return requires(permission(*permissions))


def requires_attribute(name: str, expected: Any) -> Callable[[F], F]:
    """The caller's attribute ``name`` equals ``expected``, or ``expected(value)`` is True."""
    return requires(attribute(name, expected))


__all__ = [
    "Context",
    "current_attributes",
    "current_identity",
    "enforce",
    "protect_blueprint",
    "public",
    "requires",
    "requires_attribute",
    "requires_permission",
    "requires_role",
]

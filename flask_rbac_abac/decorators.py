"""View decorators and request-scoped accessors.

``@requires(rule, resource=...)`` marks a view as protected (the before-request hook then loads the
caller's attributes) and evaluates ``rule`` with the resource the loader returns for the view's
arguments. ``OPTIONS`` requests pass through so CORS preflights work. ``@public`` marks a view
that deliberately has no rule (see ``RBAC_ABAC_REQUIRE_AUTHORIZATION``).

A rule decorator goes *below* the route decorator, so that the app registers the protected
wrapper. Each function ``requires`` wraps is recorded (:func:`routes.record_wrapped`): when the
app registered that inner function instead, the route is refused as misplaced.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import current_app, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.local import LocalProxy

from .codec import UserAttributes
from .routes import PUBLIC_ATTR, RULES_ATTR, record_wrapped
from .rules import Context, Decision, Rule, attribute, permission, role

F = TypeVar("F", bound=Callable[..., Any])
V = TypeVar("V")


def _extension() -> Any:
    try:
        return current_app.extensions["rbac_abac"]
    except KeyError:
        raise RuntimeError(
            "flask_rbac_abac is not initialised on this app: call RBACABAC(app) or init_app(app)"
        ) from None


def _current_attributes() -> UserAttributes:
    attrs = g.get("_rbac_abac_attributes")
    if attrs is None:
        attrs = _extension().load_current_attributes()
    return cast(UserAttributes, attrs)


def _current_identity() -> int | str:
    identity = g.get("_rbac_abac_identity")
    if identity is None:
        identity = _extension().load_identity()
    return cast("int | str", identity)


#: The caller's :class:`UserAttributes` (loaded on first use; 401/403/503 when it cannot be).
current_attributes: UserAttributes = cast(UserAttributes, LocalProxy(_current_attributes))
#: The caller's user id, as resolved by the identity loader.
current_identity: int | str = cast("int | str", LocalProxy(_current_identity))


def enforce(rule: Rule, resource: Any = None) -> Decision:
    """Evaluate ``rule`` for the current caller; abort with 403 JSON when it denies."""
    return cast(Decision, _extension().authorize(rule, resource))


def requires(rule: Rule, *, resource: Callable[..., Any] | None = None) -> Callable[[F], F]:
    """Protect a view with ``rule``.

    :param resource: called with the view's keyword arguments; its result is the ``resource``
        that ABAC predicates see. An HTTP error it raises (e.g. 404) passes through; any other
        exception denies.
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"requires() needs a rule, got {type(rule).__name__}")

    def decorator(view: F) -> F:
        is_async = inspect.iscoroutinefunction(view)

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if request.method != "OPTIONS":
                extension = _extension()
                target = None
                if resource is not None:
                    try:
                        target = resource(**kwargs)
                    except HTTPException:
                        raise
                    except Exception:
                        extension.deny_for_error(rule)
                extension.authorize(rule, target)
            if is_async:
                return current_app.ensure_sync(view)(*args, **kwargs)
            return view(*args, **kwargs)

        setattr(wrapper, RULES_ATTR, (*getattr(view, RULES_ATTR, ()), rule))
        record_wrapped(view)
        return cast(F, wrapper)

    return decorator


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
    "public",
    "requires",
    "requires_attribute",
    "requires_permission",
    "requires_role",
]

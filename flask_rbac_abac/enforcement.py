"""Evaluating a rule inside a request: the piece rules and decorators both stand on.

A :class:`~flask_rbac_abac.rules.Rule` is also a view decorator and a context manager, and the
public decorators of :mod:`flask_rbac_abac.decorators` are built from rules; both need "check
this rule for the current request, through the app's extension". That lives here, below both,
so imports flow one way (``decorators -> rules -> enforcement``); rules are named here in
annotations only. ``OPTIONS`` requests pass through so CORS preflights work.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import current_app

from ._names import EXTENSION_KEY, HOT_PATH_KEY, HOT_VIEW_ATTR, RULES_ATTR
from .routes import record_wrapped

if TYPE_CHECKING:
    from .rules import Decision, Rule

F = TypeVar("F", bound=Callable[..., Any])


def extension() -> Any:
    """The current app's :class:`~flask_rbac_abac.RBACABAC`; ``RuntimeError`` when absent."""
    return _extension_of(current_app._get_current_object())  # type: ignore[attr-defined]


def _extension_of(app: Any) -> Any:
    try:
        return app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "flask_rbac_abac is not initialised on this app: call RBACABAC(app) or init_app(app)"
        ) from None


def enforce(rule: Rule, resource: Any = None) -> Decision:
    """Evaluate ``rule`` for the current caller; abort with 403 JSON when it denies."""
    return cast("Decision", extension().authorize(rule, resource))


def guard(
    app: Any, rule: Rule, resource: Callable[..., Any] | None, kwargs: dict[str, Any]
) -> None:
    """The full path: ``app``'s extension decides ``rule`` for the current request (it aborts
    when it denies); ``resource`` and the view's ``kwargs`` as :func:`protect` has them."""
    ext = app.extensions.get(EXTENSION_KEY) or _extension_of(app)
    ext.guard(app, rule, resource, kwargs)


def protect(rule: Rule, resource: Callable[..., Any] | None = None) -> Callable[[F], F]:
    """The view decorator behind :func:`~flask_rbac_abac.requires` (``rule`` is a rule).

    :param resource: called with the view's keyword arguments, after the caller's identity and
        attributes are loaded; its result is the ``resource`` that ABAC predicates see. An HTTP
        error it raises (e.g. 404) passes through; any other exception denies.
    """

    def decorator(view: F) -> F:
        is_async = inspect.iscoroutinefunction(view)

        def run(*args: Any, **kwargs: Any) -> Any:  # the view, an async one run to its end
            return current_app.ensure_sync(view)(*args, **kwargs)

        call = run if is_async else view

        def full(*args: Any, **kwargs: Any) -> Any:  # the full path, then the view
            guard(current_app._get_current_object(), rule, resource, kwargs)  # type: ignore[attr-defined]
            return call(*args, **kwargs)

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            hot = None if resource is not None else current_app.extensions.get(HOT_PATH_KEY)
            if hot is None:
                return full(*args, **kwargs)
            return hot(rule, call, full, *args, **kwargs)  # the hot path (.hotpath), else full

        setattr(wrapper, RULES_ATTR, (*getattr(view, RULES_ATTR, ()), rule))
        # For the route guard (.hotpath.bound); set on every wrapper, as wraps copied the view's.
        hot_view = None if resource is not None or is_async else (wrapper, rule, view, full)
        setattr(wrapper, HOT_VIEW_ATTR, hot_view)
        record_wrapped(view)
        return cast(F, wrapper)

    return decorator

"""The hot path: the allow of a caller seen a moment ago, decided in one function.

Most requests to a protected view come from a caller this process has just served: the bearer
token is in the verifier's cache and has not expired, the caller's attributes are in L1 and are
not due for a look, and the view's rule allows from roles and permissions alone
(:meth:`Rule.allows`). The function :func:`hot_path` builds decides that case with dictionary
reads and two clock readings, without the calls of the full path.

It only ever allows, and only where the full path (:meth:`RBACABAC.guard`) would allow in the
same way: the same identity and attributes kept for the request, one L1 hit and one allow
counted. In every other case it returns ``False`` having done nothing, and the full path decides
as it always does: ``OPTIONS``, a custom identity loader, a token not verified yet (or expired),
an L1 miss or an entry that is due, a process whose invalidation subscriber is not started yet,
a rule that needs its :class:`Context` or that does not allow, and a decision somebody reads
(the audit logger at ``DEBUG``, a ``decision_made`` receiver). A view with a resource loader
never comes here (:mod:`.enforcement`).

The route guard asks it before the view's wrapper does (:func:`bound`): a sync view protected
by a rule with no resource loader is served, once the hot path allows, without its wrapper.

It reads the verifier's token cache and the client's L1 directly: the same reads the full path
makes (:meth:`JWTVerifier.user_id`, :meth:`RedisAttributeClient.get_user_attributes`), which
take no lock, so the two cannot disagree on what a hit is.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from logging import DEBUG
from typing import TYPE_CHECKING, Any

from flask import request

from . import invalidation
from ._names import (
    AUDIT_LOGGER,
    HOT_VIEW_ATTR,
    PASS_THROUGH_METHODS,
    REQUEST_ATTRIBUTES,
    REQUEST_IDENTITY,
)
from .signals import decision_made

if TYPE_CHECKING:
    from .client import RedisAttributeClient
    from .identity import JWTVerifier
    from .rules import Rule

#: ``hot(rule, allowed, missed, *args, **kwargs)``: ``allowed(*args, **kwargs)`` when the hot
#: path allowed (and counted) the current request, else ``missed(*args, **kwargs)``.
HotPath = Callable[..., Any]

audit = logging.getLogger(AUDIT_LOGGER)


def hot_path(owner: Any, verifier: JWTVerifier, client: RedisAttributeClient) -> HotPath:
    """The hot path of one app: ``owner`` is its :class:`RBACABAC` (whose identity loader, once
    registered, sends every request the full way), ``verifier`` and ``client`` the app's.

    It calls on, rather than answering: the route guard stores it, with the rule and the two
    ways on bound in a ``functools.partial``, as the view itself (:func:`bound`), so a request
    it allows costs one Python call. A view's wrapper calls it the same way.
    """
    verified = verifier._cache.get
    token_clock, leeway = verifier._timer, verifier._leeway
    l1 = client.local.entries.get
    clock, service, metrics = client._timer, client.service_name, client.metrics

    def hot(
        rule: Rule, allowed: Callable[..., Any], missed: Callable[..., Any], /, *args: Any,
        **kwargs: Any,
    ) -> Any:  # fmt: skip
        req = request._get_current_object()  # type: ignore[attr-defined]
        if (
            req.method in PASS_THROUGH_METHODS
            or owner._identity_loader is not None
            or client._listening_in != invalidation.generation
            or decision_made.receivers
            or audit.isEnabledFor(DEBUG)
        ):
            return missed(*args, **kwargs)
        kept = req.__dict__
        attrs = kept.get(REQUEST_ATTRIBUTES)  # loaded by an outer rule of this request
        user_id = None
        if attrs is None:
            hit = verified(req.environ.get("HTTP_AUTHORIZATION", ""))
            if hit is None or token_clock() >= hit[1] + leeway:
                return missed(*args, **kwargs)
            user_id = hit[0]
            entry = l1((service, user_id))
            if entry is None or entry.due <= clock():
                return missed(*args, **kwargs)
            attrs = entry.attrs
        roles = rule.any_role  # a role rule, decided here (as Role.allows does)
        if roles is not None:
            allows = not roles.isdisjoint(attrs.roles)
        else:
            try:
                allows = rule.allows(attrs)
            except Exception:  # a custom rule's: the full path denies it (``rule_error``)
                allows = False
        if not allows:
            return missed(*args, **kwargs)
        if user_id is None:
            metrics.allow()
        else:
            metrics.hot_allow()  # one L1 hit and one allow
            kept[REQUEST_IDENTITY] = user_id
            kept[REQUEST_ATTRIBUTES] = attrs
        return allowed(*args, **kwargs)

    return hot


def bound(hot: HotPath | None, view: Callable[..., Any]) -> Callable[..., Any]:
    """``view`` as the route guard stores it: itself, or, when ``view`` is the wrapper of a sync
    view that a rule protects with no resource loader (:func:`.enforcement.protect`), ``hot``
    with that wrapper's rule and two ways on bound: the protected view when it allows, else the
    wrapper's full path (the extension's decision, then the view).

    A decorator of the application's own above the rule (which copied the wrapper's attributes)
    is never called past: the attribute names the wrapper it is on."""
    spec = getattr(view, HOT_VIEW_ATTR, None)
    if hot is None or spec is None or spec[0] is not view:
        return view
    _, rule, protected, full = spec
    # Named and documented as the view (tools that read app.view_functions see the view).
    return functools.update_wrapper(functools.partial(hot, rule, protected, full), view)

"""The Flask extension: configuration, the route guard and the decision responses.

A request to a protected view goes, inside the view's rule wrapper (:mod:`.enforcement`, which
calls :meth:`RBACABAC.guard`): identity (401 without one) -> attributes through the client (503
when they cannot be obtained, 403 for a user unknown to the IdP) -> the view's rule (403 with the
reason when it denies). Unknown is never allowed. No hook runs before each request, so a route
without a rule costs nothing.

The route guard: a view whose rule decorator sits above the route decorator is refused (403
``misplaced_rule``) whatever the configuration, and with ``RBAC_ABAC_REQUIRE_AUTHORIZATION`` a
view with neither a rule nor ``@public`` is refused (403 ``no_rule``). Each view is judged once
(:class:`.routes.GuardedViews`: at the first request, and again whenever the app sets another
function for its endpoint), and only a refused one is wrapped.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from logging import DEBUG, INFO
from typing import Any, NoReturn, TypeVar

import requests
from flask import Flask, Request, Response, current_app, request, request_started
from werkzeug.exceptions import HTTPException

from . import config, signals
from ._names import (
    AUDIT_LOGGER,
    EXTENSION_KEY,
    HOT_PATH_KEY,
    PASS_THROUGH_METHODS,
    REQUEST_ATTRIBUTES,
    REQUEST_IDENTITY,
    STATE_KEY,
)
from .answers import refuse
from .cli import rbac_abac_cli
from .client import RedisAttributeClient
from .decorators import public
from .errors import (
    AttributesUnavailable,
    ConfigurationError,
    IdentityUnavailable,
    InvalidIdentity,
    InvalidKeyPart,
)
from .hotpath import bound, hot_path
from .identity import JWTVerifier, verifier_for
from .metrics import CONTENT_TYPE, PrometheusMetrics
from .model import UserAttributes, validate_user_id
from .routes import GuardedViews, Protection, refused_methods, view_name
from .rules import ALLOW, ERROR, Context, Decision, Rule

log = logging.getLogger(__name__)
audit = logging.getLogger(AUDIT_LOGGER)

IdentityLoader = Callable[[], Any]
L = TypeVar("L", bound=IdentityLoader)


#: The refusals of the route guard: a misplaced rule always, a view without rule when required.
MISPLACED_RULE = Decision(
    False, "this view's authorization rule is misplaced and never runs", "misplaced_rule"
)
NO_RULE = Decision(False, "this view has no authorization rule", "no_rule")


@dataclass
class _AppState:
    settings: config.Settings
    client: RedisAttributeClient
    verifier: JWTVerifier | None
    #: Closes the client once: at :meth:`RBACABAC.close`, or when the app is garbage collected.
    closer: weakref.finalize[[], Flask] | None = None


def _abort(status: int, error: str, reason: str, **headers: str) -> NoReturn:
    """Raise the refusal as an HTTP exception (:mod:`.answers`): error handlers can replace it."""
    raise refuse(status, error, reason, **headers)


def _invalid_identity() -> NoReturn:
    """401: the caller proved an identity, but it is not a user id (never looked up)."""
    _abort(
        401,
        "the identity is not a valid user id",
        "invalid_identity",
        **{"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


class RBACABAC:
    """Authorize requests by roles, permissions and attributes.

    ``RBACABAC(app)`` or ``rbac = RBACABAC(); rbac.init_app(app)``. One instance may serve
    several apps; each app gets its own configuration and client.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        redis: Any = None,
        session: requests.Session | None = None,
    ) -> None:
        self._identity_loader: IdentityLoader | None = None
        if app is not None:
            self.init_app(app, redis=redis, session=session)

    def init_app(
        self, app: Flask, *, redis: Any = None, session: requests.Session | None = None
    ) -> None:
        """Validate the app's configuration, create its client and register the hook.

        :param redis: a redis-py compatible client to use instead of ``RBAC_ABAC_REDIS_URL``.
        :param session: a ``requests.Session`` for calls to the identity provider.
        :raises RuntimeError: when the app already has the extension.
        :raises ConfigurationError: naming the key that is missing or malformed.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("flask_rbac_abac is already registered on this app")
        settings = config.load(app.config)
        client = RedisAttributeClient.from_settings(settings, redis=redis, session=session)
        client.owner = app
        state = _AppState(settings, client, self._verifier(settings))
        # The client never holds the app strongly, so the app can be collected, and its client
        # closed then (its subscriber thread stopped, its connections released).
        state.closer = weakref.finalize(app, client.close)
        app.extensions[STATE_KEY] = state
        app.extensions[EXTENSION_KEY] = self
        if state.verifier is not None:  # the hot path knows callers by their verified tokens
            app.extensions[HOT_PATH_KEY] = hot_path(self, state.verifier, client)
        self._install_guard(app, state)
        if settings.metrics_endpoint is not None:
            self._serve_metrics(app, settings.metrics_endpoint, client)
        app.cli.add_command(rbac_abac_cli)

    def _serve_metrics(self, app: Flask, path: str, client: RedisAttributeClient) -> None:
        """Count into Prometheus metrics too, and serve them at ``path`` to anyone (public)."""
        client.metrics.exporter = PrometheusMetrics(client.service_name)

        @public
        def rbac_abac_metrics() -> Response:
            return Response(self.prometheus(), headers={"Content-Type": CONTENT_TYPE})

        app.add_url_rule(path, "rbac_abac_metrics", rbac_abac_metrics, methods=["GET"])

    @staticmethod
    def _verifier(settings: config.Settings) -> JWTVerifier | None:
        verifier = verifier_for(settings)
        if verifier is None:
            log.warning(
                "none of RBAC_ABAC_JWKS_URL, RBAC_ABAC_JWT_PUBLIC_KEY and RBAC_ABAC_JWT_SECRET "
                "is set and no identity_loader is registered yet: protected views will answer 401"
            )
        return verifier

    def _state(self, app: Flask | None = None) -> _AppState:
        target = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
        try:
            return target.extensions[STATE_KEY]  # type: ignore[no-any-return]
        except KeyError:
            raise RuntimeError("flask_rbac_abac is not initialised on this app") from None

    @property
    def settings(self) -> config.Settings:
        """The current app's validated configuration."""
        return self._state().settings

    @property
    def client(self) -> RedisAttributeClient:
        """The current app's :class:`RedisAttributeClient`."""
        return self._state().client

    def close(self, app: Flask | None = None) -> None:
        """Close ``app``'s client (default: the current app's): stop its invalidation subscriber
        and release its connections. Idempotent.

        Call it when an app is torn down (a test fixture, a worker shutting down): without it the
        client is closed only once the app is garbage collected.
        """
        state = self._state(app)
        if state.closer is not None:
            state.closer()

    def identity_loader(self, loader: L) -> L:
        """Register ``loader() -> user id or None`` to replace the JWT bearer loader."""
        self._identity_loader = loader
        return loader

    # -- the route guard -------------------------------------------------------------------

    def _install_guard(self, app: Flask, state: _AppState) -> None:
        """Put the route guard into ``app.view_functions`` (:class:`.routes.GuardedViews`).

        Nothing runs before each request: a view the guard refuses is replaced by a wrapper
        that refuses it, a protected view is stored bound to the hot path (:func:`.hotpath.bound`),
        and the views are judged once, at the first request (``request_started``,
        then disconnected), and each one set after that when it is set. The first request also
        starts this process's invalidation subscriber (a forked worker's first lookup starts
        its own).
        """
        url_map, blueprints = app.url_map, app.blueprints  # not the app: it must stay collectable
        extensions, required = app.extensions, state.settings.require_authorization

        def judge(endpoint: str, view: Callable[..., Any]) -> Callable[..., Any]:
            refused = refused_methods(endpoint, view, url_map, blueprints, required)
            if not refused:
                return bound(extensions.get(HOT_PATH_KEY), view)
            if Protection.MISPLACED in refused.values():
                log.error(
                    "view %s (endpoint %r) is registered without its rule: the rule decorator "
                    "is above the route decorator, so the rule never runs; every request to it "
                    "is refused (403 misplaced_rule). Put the route decorator first (outermost).",
                    view_name(view),
                    endpoint,
                )
            return self._refusing(state, view, refused)

        views = GuardedViews(app.view_functions, judge)
        app.view_functions = views

        def judge_at_first_request(sender: Flask, **_: Any) -> None:
            state.client.listen()
            views.judge_all()
            request_started.disconnect(judge_at_first_request)  # from every sender: it has one

        request_started.connect(judge_at_first_request, sender=app, weak=False)

    def _refusing(
        self, state: _AppState, view: Callable[..., Any], refused: dict[str, Protection]
    ) -> Callable[..., Any]:
        """``view``, refused for the methods in ``refused`` (403 ``misplaced_rule``/``no_rule``)."""

        @functools.wraps(view)
        def refused_view(*args: Any, **kwargs: Any) -> Any:
            req = request._get_current_object()  # type: ignore[attr-defined]
            kind = refused.get(req.method)
            if kind is Protection.MISPLACED:
                self._refuse(state, MISPLACED_RULE, req)
            if kind is not None:
                self._refuse(state, NO_RULE, req)
            return current_app.ensure_sync(view)(*args, **kwargs)

        return refused_view

    # -- the request path -------------------------------------------------------------------
    # Called by the view wrapper of a protected view (:mod:`.enforcement`), once per request.
    # Proxies (request, g) are resolved once per call, and nothing is looked up twice.

    def guard(
        self,
        app: Flask,
        rule: Rule,
        resource: Callable[..., Any] | None,
        view_args: dict[str, Any],
    ) -> None:
        """Authorize the current request for a view protected by ``rule``; aborts 401/403/503.

        The caller's attributes first (so an anonymous caller gets 401, not the resource
        loader's 404), then the resource for ``view_args``, then the rule (:meth:`_decide`).

        :param app: the request's app (``current_app``).
        """
        req = request._get_current_object()  # type: ignore[attr-defined]
        if req.method in PASS_THROUGH_METHODS:
            return  # a CORS preflight carries no credentials
        state = app.extensions[STATE_KEY]
        user = self._load_attributes(state, req, req.__dict__)
        target = None
        if resource is not None:
            try:
                target = resource(**view_args)
            except HTTPException:
                raise
            except Exception:
                self.deny_for_error(rule)
        self._decide(state, rule, user, target, req)

    def _decide(
        self, state: _AppState, rule: Rule, user: UserAttributes, resource: Any, req: Request
    ) -> Decision:
        """``rule``'s decision for ``user``, recorded; aborts 403 when it does not allow.

        :meth:`Rule.allows` first (a role check needs no :class:`Context`), else
        :meth:`Rule.evaluate`.
        """
        try:
            decision = ALLOW if rule.allows(user) else rule.evaluate(Context(user, resource, req))
        except Exception:  # a custom rule's allows() or evaluate(): an error, never a grant
            log.exception("authorization rule %r raised; denying", rule)
            decision = ERROR
        if decision is ALLOW and not (audit.isEnabledFor(DEBUG) or signals.decision_made.receivers):
            state.client.metrics.allow()  # an allow nobody reads: only counted
            return decision
        self._record(state, decision, user.user_id, rule, req)
        if not decision.allowed:
            _abort(403, decision.reason, decision.code)
        return decision

    def _refuse(self, state: _AppState, decision: Decision, req: Request) -> NoReturn:
        self._record(state, decision, None, None, req)
        _abort(403, decision.reason, decision.code)

    def load_identity(self) -> int | str:
        """The caller's user id, kept for the request; aborts with 401 JSON when there is none."""
        req = request._get_current_object()  # type: ignore[attr-defined]
        return self._load_identity(self._state(), req, req.__dict__)

    def _load_identity(
        self, state: _AppState, req: Request, per_request: dict[str, Any]
    ) -> int | str:
        """:meth:`load_identity`. ``per_request`` is where the request keeps what was loaded for
        it: the request object's own ``__dict__``, which no client can write to."""
        cached: int | str | None = per_request.get(REQUEST_IDENTITY)
        if cached is not None:
            return cached
        identity: int | str | None = None
        if self._identity_loader is not None:
            try:
                raw = self._identity_loader()
                identity = None if raw is None else validate_user_id(raw)
            except InvalidKeyPart:
                log.warning("identity loader returned an invalid user id")
                _invalid_identity()
            except Exception:
                log.exception("identity loader raised; treating the caller as anonymous")
        elif state.verifier is not None:
            try:
                identity = state.verifier.user_id(req.environ.get("HTTP_AUTHORIZATION"))
            except InvalidIdentity:
                _invalid_identity()
            except IdentityUnavailable:
                _abort(503, "the identity cannot be verified now", "identity_unavailable")
        if identity is None:
            _abort(401, "authentication required", "no_identity", **{"WWW-Authenticate": "Bearer"})
        per_request[REQUEST_IDENTITY] = identity
        return identity

    def load_current_attributes(self) -> UserAttributes:
        """The caller's attributes, kept for the request; aborts 401, 403 or 503 (JSON)."""
        req = request._get_current_object()  # type: ignore[attr-defined]
        return self._load_attributes(self._state(), req, req.__dict__)

    def _load_attributes(
        self, state: _AppState, req: Request, per_request: dict[str, Any]
    ) -> UserAttributes:
        attrs: UserAttributes | None = per_request.get(REQUEST_ATTRIBUTES)
        if attrs is not None:
            return attrs
        user_id = self._load_identity(state, req, per_request)
        client = state.client
        try:
            attrs = client.get_user_attributes(user_id)
        except AttributesUnavailable as exc:
            log.warning("attributes unavailable for user %s: %s", user_id, exc)
            _abort(503, "attributes temporarily unavailable", "attributes_unavailable")
        if attrs is None:
            self._record(state, Decision(False, "unknown", "unknown_user"), user_id, None, req)
            _abort(
                403,
                f"user {user_id} has no attributes in service {client.service_name}",
                "unknown_user",
            )
        per_request[REQUEST_ATTRIBUTES] = attrs
        return attrs

    def authorize(self, rule: Rule, resource: Any = None) -> Decision:
        """Evaluate ``rule`` for the current caller; abort with 403 JSON when it denies."""
        state = self._state()
        req = request._get_current_object()  # type: ignore[attr-defined]
        user = self._load_attributes(state, req, req.__dict__)
        return self._decide(state, rule, user, resource, req)

    def deny_for_error(self, rule: Rule) -> NoReturn:
        """A resource loader raised: deny (logged), never a 500 or an allow."""
        log.exception("resource loader for %r raised; denying", rule)
        decision = ERROR
        req = request._get_current_object()  # type: ignore[attr-defined]
        self._record(self._state(), decision, req.__dict__.get(REQUEST_IDENTITY), rule, req)
        _abort(403, decision.reason, decision.code)

    def _record(
        self, state: _AppState, decision: Decision, user_id: Any, rule: Rule | None, req: Request
    ) -> None:
        client = state.client
        if decision is ALLOW:  # the allow of the library's own rules: the counter's fast path
            client.metrics.allow()
        else:
            client.metrics.decision(decision.outcome, decision.code)
        level = DEBUG if decision.allowed else INFO
        if audit.isEnabledFor(level):
            audit.log(
                level,
                "%s user=%s service=%s endpoint=%s code=%s",
                "allow" if decision.allowed else "deny",
                user_id,
                client.service_name,
                req.endpoint,
                decision.code,
            )
        if signals.decision_made.receivers:
            signals.decision_made.send(
                current_app._get_current_object(),  # type: ignore[attr-defined]
                user_id=user_id,
                allowed=decision.allowed,
                reason=decision.reason,
                rule=rule,
            )

    # -- operations -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The current app's counters (see :meth:`RedisAttributeClient.stats`)."""
        return self.client.stats()

    def prometheus(self) -> str:
        """What the current app's metrics endpoint serves (``RBAC_ABAC_METRICS_ENDPOINT``).

        :raises ConfigurationError: the endpoint is not configured.
        """
        client = self.client
        exporter = client.metrics.exporter
        if exporter is None:
            raise ConfigurationError(
                "rbac.prometheus() needs RBAC_ABAC_METRICS_ENDPOINT (and prometheus_client)"
            )
        # The other workers record their breaker at each IdP call; this one is read now.
        exporter.breaker(client.idp.breaker.state)
        return exporter.render().decode()

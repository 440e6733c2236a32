"""The Flask apps compared, one per case, each serving the same ``GET /r`` (and, for bare,
open and protected, ``GET /a``: the same view as ``async def``) with the same JSON body.

Used in-process (:mod:`bench.inprocess`, ``app.wsgi_app`` called directly) and over HTTP
(:mod:`bench.over_http`, as ``gunicorn 'bench.apps:create_app("protected")'``, configured by
``RBAC_ABAC_REDIS_URL`` and ``BENCH_KEY_PREFIX``).

Every request carries the same ``Authorization: Bearer`` header. The baselines that need a user
(Redis by hand, pycasbin, Flask-Principal) get it the way flask-rbac-abac does after the first
request: from a per-process cache of verified tokens (verified with PyJWT on a miss only), so
the comparison is about authorization, not about who caches tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import wraps
from typing import Any

import jwt
import redis
from flask import Flask, abort, jsonify, request

from bench.common import ATTRS, AUDIENCE, ISSUER, REDIS_URL, SECRET, SERVICE, by_hand_key
from flask_rbac_abac import RBACABAC, RedisAttributeClient, requires_role

CASES = ("bare", "open", "protected", "byhand", "casbin", "principal")

#: The roles of each user, for the baselines that keep them in the process.
ROLES: dict[str, set[str]] = {str(ATTRS.user_id): set(ATTRS.roles)}

CASBIN_MODEL = """
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub) && keyMatch(r.obj, p.obj) && r.act == p.act
"""
CASBIN_POLICY = [["admin", "/r", "GET"]]
CASBIN_GROUPING = [[str(ATTRS.user_id), "admin"]]


def seed(prefix: str, redis_url: str = REDIS_URL) -> None:
    """Write the benchmark user to Redis: flask-rbac-abac's entry and the by-hand key."""
    client = RedisAttributeClient(
        redis_url, service_name=SERVICE, key_prefix=prefix, invalidation=False
    )
    try:
        client.set_user_attributes(ATTRS)
        client.redis.set(by_hand_key(prefix, ATTRS.user_id), json.dumps({"roles": ATTRS.roles}))
    finally:
        client.close()


class TokenCache:
    """The baselines' identity: a verified token's subject, verified once per process."""

    def __init__(self) -> None:
        self._subjects: dict[str, str] = {}

    def subject(self, authorization: str | None) -> str | None:
        if not authorization:
            return None
        subject = self._subjects.get(authorization)
        if subject is None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer":
                return None
            try:
                claims = jwt.decode(
                    token, SECRET, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER
                )
            except jwt.PyJWTError:
                return None
            subject = self._subjects[authorization] = str(claims["sub"])
        return subject


def _views(app: Flask, *decorators: Callable[[Any], Any], with_async: bool = True) -> Flask:
    """``GET /r`` (sync) and, ``with_async``, ``GET /a`` (async) with ``decorators`` applied,
    innermost last. The baselines' decorators are sync only, as flask-authz's and
    Flask-Principal's are."""

    def sync_view() -> Any:
        return jsonify(ok=True)

    async def async_view() -> Any:
        return jsonify(ok=True)

    for decorator in reversed(decorators):
        sync_view = decorator(sync_view)
        async_view = decorator(async_view)
    app.add_url_rule("/r", "r", sync_view, methods=["GET"])
    if with_async:
        app.add_url_rule("/a", "a", async_view, methods=["GET"])
    return app


def _ours(prefix: str, redis_url: str, invalidation: bool) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SERVICE_NAME=SERVICE,
        RBAC_ABAC_JWT_SECRET=SECRET,
        RBAC_ABAC_REDIS_URL=redis_url,
        RBAC_ABAC_KEY_PREFIX=prefix,
        RBAC_ABAC_INVALIDATION=invalidation,
    )
    RBACABAC(app)
    return app


def _byhand(prefix: str, redis_url: str) -> Flask:
    r = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
    tokens = TokenCache()

    def check(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            raw = r.get(by_hand_key(prefix, tokens.subject(request.headers.get("Authorization"))))
            if raw is None or "admin" not in json.loads(raw)["roles"]:
                abort(403)
            return view(*args, **kwargs)

        return wrapper

    return _views(Flask(__name__), check, with_async=False)


def _casbin() -> Flask:
    """pycasbin as flask-authz uses it: an enforcer asked (subject, rule, method) per request."""
    import casbin

    model = casbin.Enforcer.new_model(text=CASBIN_MODEL)
    enforcer = casbin.Enforcer(model)
    enforcer.add_policies(CASBIN_POLICY)
    enforcer.add_named_grouping_policies("g", CASBIN_GROUPING)
    tokens = TokenCache()

    def enforced(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            subject = tokens.subject(request.headers.get("Authorization"))
            if not enforcer.enforce(subject or "", str(request.url_rule), request.method):
                abort(403)
            return view(*args, **kwargs)

        return wrapper

    return _views(Flask(__name__), enforced, with_async=False)


def _principal() -> Flask:
    """Flask-Principal: the identity loaded per request, ``RoleNeed`` from an in-process dict."""
    from flask_principal import (
        AnonymousIdentity,
        Identity,
        Permission,
        Principal,
        RoleNeed,
        identity_loaded,
    )

    app = Flask(__name__)
    principal = Principal(app, use_sessions=False)
    tokens = TokenCache()

    @principal.identity_loader
    def load_identity() -> Identity:
        subject = tokens.subject(request.headers.get("Authorization"))
        return AnonymousIdentity() if subject is None else Identity(subject)

    @identity_loaded.connect_via(app)
    def provide_roles(sender: Flask, identity: Identity) -> None:
        for name in ROLES.get(str(identity.id), ()):
            identity.provides.add(RoleNeed(name))

    return _views(app, Permission(RoleNeed("admin")).require(http_exception=403), with_async=False)


def create_app(
    case: str, *, prefix: str | None = None, redis_url: str | None = None, invalidation: bool = True
) -> Flask:
    """The app of one case; ``prefix`` and ``redis_url`` default to ``BENCH_KEY_PREFIX`` and
    ``RBAC_ABAC_REDIS_URL``."""
    prefix = prefix or os.environ["BENCH_KEY_PREFIX"]
    redis_url = redis_url or REDIS_URL
    if case == "bare":
        return _views(Flask(__name__))
    if case == "open":
        return _views(_ours(prefix, redis_url, invalidation))
    if case == "protected":
        return _views(_ours(prefix, redis_url, invalidation), requires_role("admin"))
    if case == "byhand":
        return _byhand(prefix, redis_url)
    if case == "casbin":
        return _casbin()
    if case == "principal":
        return _principal()
    raise ValueError(f"unknown case {case!r}; one of {', '.join(CASES)}")


def client_of(app: Flask) -> RedisAttributeClient:
    """The :class:`RedisAttributeClient` of an app with the extension."""
    extension = next(e for e in app.extensions.values() if isinstance(e, RBACABAC))
    with app.app_context():
        return extension.client

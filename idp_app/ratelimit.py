"""Rate limits on ``POST /api/token``: per username and per client address (flask-limiter).

The counters live in Redis (the IdP's ``RBAC_ABAC_REDIS_URL``), so every process and replica of
the IdP counts together; in memory under ``TESTING`` unless ``IDP_TOKEN_RATE_LIMIT_STORAGE_URI``
is set. Every attempt counts, successful or not, in a moving window.

When the storage fails, logins keep working and the same limits are enforced per process in
memory (flask-limiter's in-memory fallback; it goes back to Redis once Redis answers). That is a
deliberate *fail open to local limits*: a Redis outage must not lock every user out of the IdP,
and while it lasts an attacker gets at most the limit times the number of IdP processes.

The client address is ``request.remote_addr``. Behind a reverse proxy that is the proxy's
address; set ``IDP_PROXY_FIX_X_FOR`` to the number of trusted proxies in front of the IdP and
Werkzeug's ``ProxyFix`` takes the address from that many ``X-Forwarded-For`` hops. The header is
never trusted by default: a client could write any address there.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.errors import RateLimitExceeded
from flask_limiter.util import get_remote_address
from werkzeug.middleware.proxy_fix import ProxyFix

from .errors import error_response

#: Who asked for what, and what was refused: never passwords or tokens.
audit = logging.getLogger("idp_app.audit")

#: The view the limits guard.
ENDPOINT = "token.issue_token"
MAX_USERNAME = 64


def storage(config: Any) -> tuple[str, dict[str, Any]]:
    """The limits storage URI and options for ``config``.

    ``IDP_TOKEN_RATE_LIMIT_STORAGE_URI`` when set; in memory under ``TESTING``; otherwise the
    IdP's Redis URL in the spelling the ``limits`` library expects, with the IdP's Redis timeout.
    """
    configured = config.get("IDP_TOKEN_RATE_LIMIT_STORAGE_URI")
    if configured:
        url = str(configured)
    elif config.get("TESTING"):
        return "memory://", {}
    else:
        url = str(config["RBAC_ABAC_REDIS_URL"])
    if url.startswith("memory://"):
        return url, {}
    timeout = float(config["IDP_REDIS_TIMEOUT"])
    uri, options = limits_uri(url)
    return uri, {"socket_timeout": timeout, "socket_connect_timeout": timeout, **options}


def limits_uri(url: str) -> tuple[str, dict[str, Any]]:
    """Translate one of the project's Redis URLs to a ``limits`` storage URI and options.

    ``unix://`` becomes ``redis+unix://``; ``rediss+`` schemes become ``redis+`` with ``ssl``;
    a sentinel URL's ``/service/db`` path becomes ``/service`` with the ``db`` option.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    options: dict[str, Any] = {}
    if scheme == "unix":  # no host: urlunsplit would drop the "//"
        return "redis+unix" + url[len("unix") :], options
    if scheme in ("rediss+sentinel", "rediss+cluster"):
        options["ssl"] = True
        scheme = scheme.replace("rediss", "redis", 1)
    path = parts.path
    if scheme == "redis+sentinel":
        segments = [p for p in path.split("/") if p]
        if len(segments) > 1:
            options["db"] = int(segments[1])
        path = "/" + segments[0] if segments else ""
    return urlunsplit(parts._replace(scheme=scheme, path=path)), options


def username_key() -> str:
    """The username in the body, or ``""`` (the per-username limit then does not apply, and the
    view answers 400 for the body anyway). Never raises: a bad body is the view's to refuse."""
    try:
        body = request.get_json(silent=True, cache=True)
    except Exception:  # e.g. a body over MAX_CONTENT_LENGTH: the view answers 413
        return ""
    name = body.get("username") if isinstance(body, dict) else None
    if isinstance(name, str) and 0 < len(name) <= MAX_USERNAME:
        return "user:" + name
    return ""


def _on_breach(which: str) -> Any:
    def log_breach(limit: RequestLimit) -> None:
        key = username_key()
        audit.warning(
            "token rate limit reached: limit=%s (%s) username=%r address=%s",
            which,
            limit.limit,
            key[len("user:") :] if key else None,
            get_remote_address(),
        )

    return log_breach


def _too_many(exc: RateLimitExceeded) -> Response:
    # flask-limiter's after_request hook adds Retry-After and the X-RateLimit-* headers.
    return error_response(429, "too many attempts; retry later", "rate_limited")


def _retry_after_only_on_429(response: Response) -> Response:
    # flask-limiter sets Retry-After on every limited response; it means something only on a 429.
    if response.status_code != 429:
        response.headers.pop("Retry-After", None)
    return response


def init_app(app: Flask) -> None:
    """Put the limits on the token view of ``app`` (one limiter per app: its storage is its own)."""
    hops = int(app.config["IDP_PROXY_FIX_X_FOR"])
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops)  # type: ignore[method-assign]
    uri, options = storage(app.config)
    limiter = Limiter(
        key_func=get_remote_address,
        storage_uri=uri,
        storage_options=options,
        strategy="moving-window",
        key_prefix=f"{app.config['RBAC_ABAC_KEY_PREFIX']}:ratelimit",
        headers_enabled=True,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    limiter.request_filter(lambda: request.endpoint != ENDPOINT)
    app.after_request(_retry_after_only_on_429)  # registered first, so it runs after the limiter's
    limiter.init_app(app)
    per_user = limiter.limit(
        lambda: str(current_app.config["IDP_TOKEN_RATE_LIMIT_PER_USER"]),
        key_func=username_key,
        on_breach=_on_breach("per_user"),
    )
    per_address = limiter.limit(
        lambda: str(current_app.config["IDP_TOKEN_RATE_LIMIT_PER_ADDRESS"]),
        on_breach=_on_breach("per_address"),
    )
    view: Any = app.view_functions[ENDPOINT]
    app.view_functions[ENDPOINT] = per_address(per_user(view))
    app.register_error_handler(RateLimitExceeded, _too_many)
    app.extensions["idp_app"]["limiter"] = limiter

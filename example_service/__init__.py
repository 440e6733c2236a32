"""billing_api: a small service protected by flask_rbac_abac, used by the demo and e2e tests.

Run it with ``gunicorn 'example_service:create_app()'``. Configuration comes from the
environment the library reads (``IDENTITY_PROVIDER_URL``, ``RBAC_ABAC_REDIS_URL``,
``RBAC_ABAC_SERVICE_TOKEN``, ``RBAC_ABAC_JWKS_URL``, ...); any other Flask or library key can
be set as ``BILLING_API_<KEY>`` (for example ``BILLING_API_RBAC_ABAC_LOCAL_CACHE_TTL=5``).
Invoices live in memory, per process: the point of this service is the authorization.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from flask_rbac_abac import RBACABAC

from .invoices import InvoiceStore

SERVICE_NAME = "billing_api"


class AsciiIntegerConverter(IntegerConverter):
    """``int`` for ASCII digits only: Werkzeug's matches any Unicode digit, so ``/invoices/٣``
    (Arabic-Indic three) would have reached invoice 3. Registered as ``int`` for every route.
    """

    regex = r"[0-9]+"


#: The library, created once and bound to each app in :func:`create_app`.
rbac = RBACABAC()


def create_app(test_config: Mapping[str, Any] | None = None, *, redis: Any = None) -> Flask:
    """Build the billing_api app.

    :param test_config: config values applied last (tests use it instead of the environment).
    :param redis: a redis-py compatible client to use instead of ``RBAC_ABAC_REDIS_URL``
        (tests pass a fakeredis client).
    """
    app = Flask(__name__)
    app.config.from_mapping(
        SERVICE_NAME=SERVICE_NAME,
        MAX_CONTENT_LENGTH=64 * 1024,
        # Every view must carry a rule or @public: a forgotten one is refused, not served.
        RBAC_ABAC_REQUIRE_AUTHORIZATION=True,
    )
    app.config.from_prefixed_env("BILLING_API")
    if test_config is not None:
        app.config.from_mapping(test_config)

    rbac.init_app(app, redis=redis)
    app.url_map.converters["int"] = AsciiIntegerConverter  # before the blueprints' rules
    app.extensions["billing_api"] = InvoiceStore.seeded()

    from . import health, identity, invoices, reports

    app.register_blueprint(health.bp)
    app.register_blueprint(identity.bp)
    app.register_blueprint(invoices.bp)
    app.register_blueprint(reports.bp)
    register_error_handlers(app)

    @app.after_request
    def served_by(response: Response) -> Response:
        # Which worker process answered: lets operators (and the e2e tests) tell workers apart.
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    return app


def register_error_handlers(app: Flask) -> None:
    """Every error is JSON: ``{"success": false, "error": "..."}``, never an HTML page."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if exc.response is not None:  # a response someone already built (e.g. the library's)
            return exc.response
        status = exc.code or 500
        body = {"success": False, "error": exc.description or exc.name}
        response = jsonify(body)
        response.status_code = status
        if status == 405 and exc.get_headers():
            allow = dict(exc.get_headers()).get("Allow")
            if allow:
                response.headers["Allow"] = allow
        return response

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception) -> Any:
        app.logger.exception("unhandled error (pid %d)", os.getpid())
        return jsonify({"success": False, "error": "internal server error"}), 500

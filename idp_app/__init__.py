"""The identity provider: users, services, roles and attributes, and the cache they feed.

Run it with ``flask --app idp_app run`` or ``gunicorn 'idp_app:create_app()'``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from typing import Any

from flask import Flask

from . import cli, console, converters, errors, metrics, outbox, ratelimit, settings, views
from .extensions import db, migrate

__all__ = ["create_app", "db"]

_apps: weakref.WeakSet[Flask] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # Pooled connections opened before a fork must not be shared with the parent: drop them
    # (without closing the parent's sockets). Redis clients are per process id already.
    for app in list(_apps):
        with app.app_context():
            for engine in db.engines.values():
                engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then the instance ``config.py`` and the environment, then
    ``test_config``; then validation (a :class:`flask_rbac_abac.ConfigurationError` naming the
    key), extensions, error handlers, URL converters (ASCII-only integers), blueprints and CLI
    commands.
    """
    app = Flask(__name__, instance_relative_config=True)
    settings.apply_defaults(app.config)
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
    settings.apply_env(app.config, os.environ)
    if test_config is not None:
        app.config.from_mapping(test_config)
    if app.config["DATABASE_URL"] is None:
        os.makedirs(app.instance_path, exist_ok=True)
    settings.validate(app.config, app.instance_path)

    app.extensions["idp_app"] = {}
    db.init_app(app)
    migrate.init_app(app, db)
    errors.register(app)
    converters.register(app)  # before the blueprints, whose rules use them
    views.register(app)
    console.init_app(app)
    ratelimit.init_app(app)
    metrics.init_app(app, outbox.backlog)
    cli.register(app)
    outbox.init_app(app)
    _apps.add(app)
    return app

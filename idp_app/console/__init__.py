"""The admin console at ``/admin/``: server-rendered pages a person uses instead of curl.

Sign-in is by a :class:`idp_app.models.ConsoleAdmin` (``flask --app idp_app create-admin``);
the session lives in a signed cookie (``SECRET_KEY``; HttpOnly, SameSite=Lax, Secure unless
configured off) that expires after ``IDP_CONSOLE_SESSION_LIFETIME`` seconds without a request.
Every form carries a CSRF token (Flask-WTF), checked for this blueprint only: the JSON API is
authenticated by bearer tokens and stays CSRF-exempt. Every change calls the same operations as
the API (:mod:`.ops`), records an audit entry and delivers its outbox sync after commit.
"""

from __future__ import annotations

from flask import Flask

from . import dashboard, services, signin, users  # noqa: F401 - they add their views to bp
from .blueprint import bp, csrf
from .signin import create_admin_command


def init_app(app: Flask) -> None:
    """CSRF (checked by the console's views only), the blueprint and ``create-admin``."""
    csrf.init_app(app)
    app.register_blueprint(bp, url_prefix="/admin")
    app.cli.add_command(create_admin_command)

"""The HTTP API, one blueprint per area."""

from __future__ import annotations

from flask import Flask

from . import audit, health, meta, refresh, services, token, users, warm, wellknown


def register(app: Flask) -> None:
    app.register_blueprint(refresh.bp, url_prefix="/api/refresh-user-cache")
    app.register_blueprint(services.bp, url_prefix="/api/services")
    app.register_blueprint(users.bp, url_prefix="/api/users")
    app.register_blueprint(token.bp, url_prefix="/api/token")
    app.register_blueprint(audit.bp, url_prefix="/api/audit")
    app.register_blueprint(warm.bp, url_prefix="/api/warm-cache")
    app.register_blueprint(meta.bp, url_prefix="/api")
    app.register_blueprint(health.bp, url_prefix="/healthz")
    app.register_blueprint(wellknown.bp, url_prefix="/.well-known")

"""Placeholder: the rbac-abac CLI group (being written)."""

from __future__ import annotations

from flask.cli import AppGroup

rbac_abac_cli = AppGroup("rbac-abac", help="flask-rbac-abac operations.")

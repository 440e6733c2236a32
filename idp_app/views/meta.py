"""``GET /api/openapi.json``: the API's OpenAPI document, kept in the repository."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from flask import Blueprint, Response

bp = Blueprint("meta", __name__)


@bp.get("/openapi.json")
def openapi() -> Any:
    document = files("idp_app").joinpath("openapi.json").read_bytes()
    return Response(document, mimetype="application/json")

"""The OpenAPI document served at /api/openapi.json matches the app's routes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import idp_app

DOC = Path(idp_app.__file__).with_name("openapi.json")


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", r"{\1}", rule)


def test_served_document_is_the_file_in_the_repo(client):
    r = client.get("/api/openapi.json")
    assert r.status_code == 200
    assert r.mimetype == "application/json"
    assert r.json == json.loads(DOC.read_text())
    assert r.json["openapi"].startswith("3.")


def test_every_api_route_and_method_is_documented(app):
    doc = json.loads(DOC.read_text())
    routes = [
        r
        for r in app.url_map.iter_rules()
        if r.rule.startswith(("/api", "/healthz", "/.well-known"))
    ]
    assert len(routes) >= 8
    for rule in routes:
        path = openapi_path(rule.rule)
        assert path in doc["paths"], path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in doc["paths"][path], (method, path)
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    served = {
        (openapi_path(r.rule), m.lower()) for r in routes for m in r.methods - {"HEAD", "OPTIONS"}
    }
    assert documented == served


def test_every_reference_resolves():
    doc = json.loads(DOC.read_text())
    refs = re.findall(r'"\$ref": "#/components/schemas/([A-Za-z]+)"', DOC.read_text())
    assert refs
    for name in refs:
        assert name in doc["components"]["schemas"], name


def _keys(value: object) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in _keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


def test_the_document_is_openapi_3_1_json_schema():
    """3.1 schemas are JSON Schema 2020-12: ``propertyNames`` states rules on object keys, and
    3.0's ``nullable`` means nothing (write ``"type": ["number", "null"]``), so a response with
    a null there would not match.
    """
    doc = json.loads(DOC.read_text())
    assert doc["openapi"] == "3.1.0"
    keys = set(_keys(doc["components"])) | set(_keys(doc["paths"]))
    assert "propertyNames" in keys
    assert "nullable" not in keys

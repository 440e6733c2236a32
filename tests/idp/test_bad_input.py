"""Whatever a client sends, a malformed body is a 400 JSON error, never a 500."""

from __future__ import annotations

import pytest

from .conftest import ADMIN

ENDPOINTS = [
    ("POST", "/api/refresh-user-cache/"),
    ("POST", "/api/services/"),
    ("POST", "/api/users/"),
    ("PUT", "/api/users/1/roles/billing_api"),
    ("PATCH", "/api/users/1/attributes"),
    ("POST", "/api/token"),
]

BODIES = [
    b"",
    b"null",
    b"[]",
    b'"text"',
    b"1e999",
    b"NaN",
    b'{"user_id": Infinity, "service_name": "billing_api"}',
    b"{",
    b"[" * 5000,
    b'{"a":' * 3000,
    b"\x00\xff\xfe",
    b'{"user_id": 1' + b"0" * 5000 + b', "service_name": "billing_api"}',
    b'{"a": ' + b"[" * 900 + b"]" * 900 + b"}",
    b'{"username": "\\ud800", "password": "\\ud800"}',
]

#: JSON objects of the wrong shape: 400 on every endpoint but the attributes PATCH, where any
#: JSON object is a valid patch of free-form attributes (200).
OBJECTS = [
    b'{"user_id": {"$gt": 1}, "service_name": ["billing_api"]}',
    b'{"username": ["a"], "password": {"x": 1}}',
    b'{"roles": {"a": null}}',
    b'{"roles": [null, 1, {}]}',
    b'{"name": null, "roles": null}',
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_bad_bodies_are_400_json_errors(api, method, path):
    api.service()
    api.user("alice")
    attributes_patch = path == "/api/users/1/attributes"
    for body in BODIES + OBJECTS:
        r = api.client.open(
            path, method=method, data=body, headers=ADMIN, content_type="application/json"
        )
        expected = 200 if attributes_patch and body in OBJECTS else 400
        assert r.status_code == expected, (body[:40], r.status_code, r.data[:200])
        assert r.is_json, body[:40]
        assert r.json["success"] is (expected == 200), body[:40]
        if expected == 400:
            assert r.json["error"], body[:40]
        assert "Traceback" not in r.get_data(as_text=True)


@pytest.mark.parametrize(
    "path",
    [
        "/api/users/0/attributes",
        "/api/users/-1/attributes",
        "/api/users/abc/attributes",
        f"/api/users/{2**70}/attributes",
    ],
)
def test_odd_user_ids_in_paths_are_404(client, path):
    r = client.patch(path, json={"a": 1}, headers=ADMIN)
    assert r.status_code == 404
    assert r.json["success"] is False

"""The IdP never logs a token (a user's, a service's, the admin's) or a password, on any path."""

from __future__ import annotations

import logging

import pytest

from .conftest import ADMIN_TOKEN, Api, bearer


def test_no_token_or_password_in_the_idps_logs(
    app, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        service_token = api.service()
        uid = api.user("alice")
        api.roles(uid, ["viewer"])
        login = api.client.post("/api/token", json={"username": "alice", "password": "alice-pass"})
        assert login.status_code == 200, login.json
        user_token = login.json["access_token"]
        wrong = api.client.post("/api/token", json={"username": "alice", "password": "wrong-pw"})
        assert wrong.status_code == 401
        assert api.refresh(uid, token=service_token).status_code == 200
        assert api.refresh(4242, token=service_token).status_code == 404
        assert api.refresh(uid, token=service_token[:-4] + "AAAA").status_code == 401
        assert api.refresh(uid, token=user_token).status_code == 401
        admin_as_user = api.client.post("/api/users/", json={}, headers=bearer(user_token))
        assert admin_as_user.status_code == 401
    assert caplog.records, "nothing was logged: the check would prove nothing"
    logged = caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
    for secret in (service_token, user_token, ADMIN_TOKEN, "alice-pass", "wrong-pw"):
        assert secret not in logged

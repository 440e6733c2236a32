"""The ``flask --app idp_app`` commands, through ``app.test_cli_runner()``."""

from __future__ import annotations

import json

import jwt
import pytest
from sqlalchemy import inspect

from flask_rbac_abac.keys import attributes_key
from flask_rbac_abac.model import UserAttributes
from idp_app import db

from .conftest import Api, bearer


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def test_init_db_creates_the_tables(make_app, sqlite_url, real_redis):
    app = make_app(sqlite_url, migrated=False)
    with app.app_context():
        assert inspect(db.engine).get_table_names() == []
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    assert "Initialized the database." in result.output
    with app.app_context():
        assert {
            "users",
            "services",
            "role_assignments",
            "service_tokens",
            "alembic_version",
        } <= set(inspect(db.engine).get_table_names())


def test_create_service_prints_a_working_token(runner, api):
    result = runner.invoke(
        args=["create-service", "shipping_api", "--role", "clerk=parcel:read,parcel:write"]
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert token.startswith("svc_")
    uid = api.user("alice")
    api.roles(uid, ["clerk"], "shipping_api")
    r = api.refresh(uid, "shipping_api", token=token)
    assert r.status_code == 200
    again = runner.invoke(args=["create-service", "shipping_api"])
    assert again.exit_code == 1
    assert "service 'shipping_api' already exists" in again.output
    bad = runner.invoke(args=["create-service", "bad:name"])
    assert bad.exit_code == 1
    assert "invalid service_name" in bad.output


def test_create_user_and_assign_role(runner, api, real_redis, key_prefix):
    api.service()
    result = runner.invoke(
        args=[
            "create-user",
            "erin",
            "--password",
            "erin-pass",
            "--attr",
            "clearance=4",
            "--attr",
            "department=ops",
        ]
    )
    assert result.exit_code == 0, result.output
    r = api.client.post("/api/token", json={"username": "erin", "password": "erin-pass"})
    assert r.status_code == 200
    uid = int(result.output.strip().rsplit(" ", 1)[1])

    result = runner.invoke(args=["assign-role", "erin", "billing_api", "viewer"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["assign-role", "erin", "billing_api", "accountant"])
    assert result.exit_code == 0, result.output
    value = UserAttributes.from_json(real_redis.get(attributes_key(key_prefix, "billing_api", uid)))
    assert value.roles == ("accountant", "viewer")
    assert value.version == 2
    assert value.attributes == {"clearance": 4, "department": "ops"}

    dup = runner.invoke(args=["create-user", "erin", "--password", "x"])
    assert dup.exit_code == 1
    assert "user 'erin' already exists" in dup.output
    bad_role = runner.invoke(args=["assign-role", "erin", "billing_api", "root"])
    assert bad_role.exit_code == 1
    assert "unknown role(s) for service 'billing_api': root" in bad_role.output
    nobody = runner.invoke(args=["assign-role", "nobody", "billing_api", "viewer"])
    assert nobody.exit_code == 1
    assert "user 'nobody' not found" in nobody.output


def test_seed_demo_is_idempotent_and_writes_the_token(runner, client, tmp_path):
    out = tmp_path / "tokens.json"
    first = runner.invoke(args=["seed-demo", "--token-out", str(out)])
    assert first.exit_code == 0, first.output
    token = json.loads(out.read_text())["billing_api"]
    assert token in first.output

    second = runner.invoke(args=["seed-demo", "--token-out", str(out)])
    assert second.exit_code == 0, second.output
    token2 = json.loads(out.read_text())["billing_api"]

    api = Api(client)
    expected = {
        "alice": (["admin"], {"department": "finance", "clearance": 5}),
        "bob": (["accountant"], {"department": "finance", "clearance": 2}),
        "carol": (["viewer"], {"department": "sales", "clearance": 3}),
        "dave": ([], {"department": "support", "clearance": 1}),
    }
    for username, (roles, attributes) in expected.items():
        r = client.post("/api/token", json={"username": username, "password": f"{username}-pass"})
        assert r.status_code == 200, username
        claims = jwt.decode(r.json["access_token"], options={"verify_signature": False})
        uid = int(claims["sub"])
        for t in (token, token2):
            body = api.refresh(uid, token=t).json
            if not roles:  # a user without a role is unknown to the service
                assert body["code"] == "user_not_found"
                continue
            assert body["attributes"]["roles"] == roles
            assert body["attributes"]["attributes"] == attributes
    alice = api.refresh(1, token=token2).json["attributes"]
    assert alice["permissions"] == ["invoice:read", "invoice:write", "report:read"]
    r = client.post("/api/users/", json={"username": "zed", "password": "x"}, headers=bearer(token))
    assert r.status_code == 403

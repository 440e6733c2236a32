"""Configuration: required keys, validation naming the key, environment, database URLs."""

from __future__ import annotations

import pytest

from flask_rbac_abac.errors import ConfigurationError
from idp_app import create_app, settings

from .conftest import ADMIN_TOKEN, JWT_SECRET


def config(tmp_path, **overrides):
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'idp.sqlite3'}",
        "IDP_ADMIN_TOKEN": ADMIN_TOKEN,
        **overrides,
    }


def test_admin_token_is_required_outside_testing(tmp_path, monkeypatch):
    monkeypatch.delenv("IDP_ADMIN_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match=r"^IDP_ADMIN_TOKEN is not set"):
        create_app(config(tmp_path, IDP_ADMIN_TOKEN=None))
    app = create_app(config(tmp_path, IDP_ADMIN_TOKEN=None, TESTING=True))
    r = app.test_client().post(
        "/api/users/", json={"username": "a", "password": "b"}, headers={"Authorization": "Bearer "}
    )
    assert r.status_code == 401


def test_admin_token_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("IDP_ADMIN_TOKEN", "from-the-environment-123")
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})
    assert app.config["IDP_ADMIN_TOKEN"] == "from-the-environment-123"
    assert app.config["TESTING"] is False


def test_short_admin_token_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match=r"^IDP_ADMIN_TOKEN must be"):
        create_app(config(tmp_path, IDP_ADMIN_TOKEN="short"))


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"RBAC_ABAC_JWT_SECRET": "too-short"}, "RBAC_ABAC_JWT_SECRET"),
        (
            {"RBAC_ABAC_JWT_SECRET": JWT_SECRET, "RBAC_ABAC_JWT_PRIVATE_KEY": "x"},
            "RBAC_ABAC_JWT_SECRET and RBAC_ABAC_JWT_PRIVATE_KEY",
        ),
        ({"RBAC_ABAC_JWT_PRIVATE_KEY": "not a key"}, "RBAC_ABAC_JWT_PRIVATE_KEY"),
        (
            {"RBAC_ABAC_JWT_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\nAAAA\n"},
            "RBAC_ABAC_JWT_PRIVATE_KEY",
        ),
        ({"RBAC_ABAC_CACHE_TTL": "0"}, "RBAC_ABAC_CACHE_TTL"),
        ({"RBAC_ABAC_CACHE_TTL": "soon"}, "RBAC_ABAC_CACHE_TTL"),
        ({"RBAC_ABAC_KEY_PREFIX": "a:b"}, "RBAC_ABAC_KEY_PREFIX"),
        ({"RBAC_ABAC_REDIS_URL": "http://localhost"}, "RBAC_ABAC_REDIS_URL"),
        ({"IDP_TOKEN_LIFETIME": -5}, "IDP_TOKEN_LIFETIME"),
        ({"IDP_REFRESH_COALESCE_SECONDS": "x"}, "IDP_REFRESH_COALESCE_SECONDS"),
        ({"RBAC_ABAC_JWT_AUDIENCE": ""}, "RBAC_ABAC_JWT_AUDIENCE"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path, overrides, key):
    with pytest.raises(ConfigurationError, match=f"^{key}"):
        create_app(config(tmp_path, **overrides))


def test_environment_overrides_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("RBAC_ABAC_CACHE_TTL", "1234")
    monkeypatch.setenv("RBAC_ABAC_KEY_PREFIX", "envprefix")
    monkeypatch.setenv("IDP_TOKEN_LIFETIME", "77")
    monkeypatch.setenv("RBAC_ABAC_REDIS_URL", "redis://example.invalid:6390/2")
    app = create_app(config(tmp_path))
    assert app.config["RBAC_ABAC_CACHE_TTL"] == 1234
    assert app.config["RBAC_ABAC_KEY_PREFIX"] == "envprefix"
    assert app.config["IDP_TOKEN_LIFETIME"] == 77
    assert app.config["RBAC_ABAC_REDIS_URL"] == "redis://example.invalid:6390/2"


def test_defaults(tmp_path, monkeypatch):
    for key in settings.ENV_KEYS:
        if key != "DATABASE_URL":
            monkeypatch.delenv(key, raising=False)
    app = create_app(config(tmp_path))
    assert app.config["RBAC_ABAC_CACHE_TTL"] == 86400
    assert app.config["RBAC_ABAC_REDIS_URL"] == "redis://localhost:6379/0"
    assert app.config["RBAC_ABAC_KEY_PREFIX"] == "rbac_abac"
    assert app.config["RBAC_ABAC_JWT_AUDIENCE"] == "rbac-abac"
    assert app.config["RBAC_ABAC_JWT_ISSUER"] == "rbac-abac-idp"
    assert app.config["IDP_TOKEN_LIFETIME"] == 900
    assert app.config["IDP_REFRESH_COALESCE_SECONDS"] == 1.0
    assert app.config["MAX_CONTENT_LENGTH"] == 64 * 1024


def test_database_url_defaults_to_sqlite_in_the_instance_folder(tmp_path):
    conf = {"DATABASE_URL": None}
    settings.apply_defaults(conf)
    conf.update(IDP_ADMIN_TOKEN=ADMIN_TOKEN, RBAC_ABAC_CACHE_TTL=86400)
    settings.validate(conf, str(tmp_path))
    assert conf["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/idp.sqlite3"


@pytest.mark.parametrize(
    ("url", "uri"),
    [
        ("postgresql://u:p@db:5432/idp", "postgresql+psycopg://u:p@db:5432/idp"),
        ("postgres://u@db/idp", "postgresql+psycopg://u@db/idp"),
        ("postgresql+psycopg://u@db/idp", "postgresql+psycopg://u@db/idp"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_postgresql_urls_use_psycopg3(tmp_path, url, uri):
    app = create_app(config(tmp_path, DATABASE_URL=url))
    assert app.config["SQLALCHEMY_DATABASE_URI"] == uri
    assert app.config["DATABASE_URL"] == url


def test_two_apps_stay_isolated(make_app, tmp_path, real_redis):
    one = make_app(f"sqlite:///{tmp_path / 'one.db'}")
    two = make_app(f"sqlite:///{tmp_path / 'two.db'}", RBAC_ABAC_KEY_PREFIX="otherprefix")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"username": "alice", "password": "pw"}
    assert one.test_client().post("/api/users/", json=body, headers=admin).status_code == 201
    assert two.test_client().post("/api/users/", json=body, headers=admin).status_code == 201
    assert one.config["RBAC_ABAC_KEY_PREFIX"] != two.config["RBAC_ABAC_KEY_PREFIX"]

"""init_app validates configuration and names the bad key."""

from __future__ import annotations

import re

import fakeredis
import pytest
from flask import Flask

from flask_rbac_abac import RBACABAC, ConfigurationError, RedisAttributeClient, UserAttributes
from flask_rbac_abac.config import DEFAULTS, Settings

from .conftest import JWT_SECRET


def make(config: dict) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    return app


def init(config: dict) -> tuple[Flask, RBACABAC]:
    app = make({"SERVICE_NAME": "billing_api", "RBAC_ABAC_INVALIDATION": False, **config})
    return app, RBACABAC(app, redis=fakeredis.FakeRedis())


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RBAC_ABAC_CACHE_TTL", "IDENTITY_PROVIDER_URL", "RBAC_ABAC_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    app, rbac = init({})
    assert app.config["RBAC_ABAC_CACHE_TTL"] == 86400
    assert app.config["IDENTITY_PROVIDER_URL"] == "http://identity-provider:8000"
    assert app.config["RBAC_ABAC_REDIS_URL"] == "redis://localhost:6379/0"
    assert app.config["RBAC_ABAC_AUTO_REFRESH"] is True
    assert app.config["RBAC_ABAC_LOCAL_CACHE_SIZE"] == 10000
    assert app.config["RBAC_ABAC_LOCAL_CACHE_TTL"] == 60
    assert app.extensions["rbac_abac"] is rbac
    with app.app_context():
        assert rbac.client.ttl == 86400


#: The settings a RedisAttributeClient is built from.
CLIENT_FIELDS = (
    "service_name",
    "cache_ttl",
    "identity_provider_url",
    "redis_url",
    "service_token",
    "key_prefix",
    "auto_refresh",
    "local_cache_size",
    "local_cache_ttl",
    "max_stale",
    "redis_timeout",
    "idp_timeout",
    "invalidation",
    "value_keys",
)


def test_app_and_standalone_clients_share_one_set_of_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    app, rbac = init({})
    standalone = RedisAttributeClient(
        service_name="billing_api", invalidation=False, redis=fakeredis.FakeRedis()
    )
    try:
        with app.app_context():
            app_settings = rbac.client.settings
        for name in CLIENT_FIELDS:  # (the verifier's own fields are resolved by load())
            assert getattr(app_settings, name) == getattr(standalone.settings, name), name
        assert standalone.settings == Settings(service_name="billing_api", invalidation=False)
    finally:
        standalone.close()


def test_client_from_settings() -> None:
    settings = Settings(service_name="billing_api", cache_ttl=120, invalidation=False)
    client = RedisAttributeClient.from_settings(settings, redis=fakeredis.FakeRedis())
    try:
        assert client.settings is settings
        assert (client.service_name, client.ttl, client.subscriber) == ("billing_api", 120, None)
        client.set_user_attributes(UserAttributes(user_id=1, service_name="billing_api"))
        assert 110 <= client.redis.ttl(client.key(1)) <= 120
    finally:
        client.close()


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RBAC_ABAC_CACHE_TTL", "3600")
    monkeypatch.setenv("IDENTITY_PROVIDER_URL", "http://idp.internal:9000/")
    monkeypatch.setenv("RBAC_ABAC_SERVICE_TOKEN", "tok")
    app, rbac = init({})
    assert app.config["RBAC_ABAC_CACHE_TTL"] == "3600"
    with app.app_context():
        assert rbac.client.ttl == 3600
        assert rbac.client.idp.base_url == "http://idp.internal:9000"
        attrs = UserAttributes(user_id=1, service_name="billing_api")
        rbac.client.set_user_attributes(attrs)
        assert 3590 <= rbac.client.redis.ttl(rbac.client.key(1)) <= 3600


def test_init_app_later_and_twice() -> None:
    app = make({"SERVICE_NAME": "billing_api", "RBAC_ABAC_INVALIDATION": False})
    rbac = RBACABAC()
    rbac.init_app(app, redis=fakeredis.FakeRedis())
    assert app.extensions["rbac_abac"] is rbac
    with pytest.raises(RuntimeError, match="already registered"):
        rbac.init_app(app)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"SERVICE_NAME": None}, "SERVICE_NAME is required"),
        ({"SERVICE_NAME": "bad:name"}, "SERVICE_NAME: invalid service_name"),
        ({"RBAC_ABAC_CACHE_TTL": 0}, "RBAC_ABAC_CACHE_TTL must be a positive integer, got 0"),
        ({"RBAC_ABAC_CACHE_TTL": "soon"}, "RBAC_ABAC_CACHE_TTL must be a positive integer"),
        ({"RBAC_ABAC_CACHE_TTL": True}, "RBAC_ABAC_CACHE_TTL must be a positive integer"),
        ({"IDENTITY_PROVIDER_URL": "idp:8000"}, "IDENTITY_PROVIDER_URL must be an http"),
        ({"RBAC_ABAC_AUTO_REFRESH": "maybe"}, "RBAC_ABAC_AUTO_REFRESH must be a boolean"),
        ({"RBAC_ABAC_LOCAL_CACHE_SIZE": -5}, "RBAC_ABAC_LOCAL_CACHE_SIZE must be a positive"),
        ({"RBAC_ABAC_LOCAL_CACHE_TTL": "x"}, "RBAC_ABAC_LOCAL_CACHE_TTL must be a positive"),
        ({"RBAC_ABAC_MAX_STALE": -1}, "RBAC_ABAC_MAX_STALE must be a positive"),
        ({"RBAC_ABAC_KEY_PREFIX": "a:b"}, "RBAC_ABAC_KEY_PREFIX: invalid key prefix"),
        ({"RBAC_ABAC_REDIS_TIMEOUT": 0}, "RBAC_ABAC_REDIS_TIMEOUT must be a positive number"),
        ({"RBAC_ABAC_IDP_TIMEOUT": (1, 2, 3)}, "RBAC_ABAC_IDP_TIMEOUT must be seconds"),
        ({"RBAC_ABAC_JWT_SECRET": "short"}, "RBAC_ABAC_JWT_SECRET must be a string of at least"),
        ({"RBAC_ABAC_JWT_PUBLIC_KEY": "nope"}, "RBAC_ABAC_JWT_PUBLIC_KEY must be a PEM"),
        ({"RBAC_ABAC_REDIS_URL": "memcached://x"}, "RBAC_ABAC_REDIS_URL: unsupported scheme"),
    ],
)
def test_bad_config_names_the_key(config: dict, message: str) -> None:
    app = make({"SERVICE_NAME": "billing_api", "RBAC_ABAC_INVALIDATION": False, **config})
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        RBACABAC(app)


def test_both_jwt_keys_is_an_error() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    config = {"RBAC_ABAC_JWT_SECRET": JWT_SECRET, "RBAC_ABAC_JWT_PUBLIC_KEY": pem.decode()}
    with pytest.raises(ConfigurationError, match="choose one way to verify tokens"):
        init(config)

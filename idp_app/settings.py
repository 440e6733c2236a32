"""The identity provider's configuration: defaults, environment, validation.

Every key can be set in the instance folder's ``config.py``, in the environment (which wins over
the file) or in ``test_config`` (which wins over both). Errors are
:class:`flask_rbac_abac.ConfigurationError` and name the key. What this shares with the library
(the key prefix, the Redis URL schemes, the token settings) comes from
:mod:`flask_rbac_abac.shared`; the rest, including the TTL of what the IdP writes, is its own.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from limits import parse_many

from flask_rbac_abac.shared import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    DEFAULT_KEY_PREFIX,
    DEFAULT_REDIS_URL,
    ConfigurationError,
    InvalidKeyPart,
    as_bool,
    check_scheme,
    jwt_secret,
    non_negative_int,
    positive_float,
    positive_int,
    validate_prefix,
    value_keys,
)

from .signing_keys import ALGORITHMS, algorithm_of

MIN_ADMIN_TOKEN_CHARS = 16
#: Seconds an entry the identity provider writes lives in Redis (``RBAC_ABAC_CACHE_TTL``). The
#: identity provider writes every entry services read, so this TTL is its own setting, read from
#: its own configuration and environment; a service's ``RBAC_ABAC_CACHE_TTL`` only applies to
#: entries that service writes itself.
DEFAULT_CACHE_TTL = 86400
#: Keys read from the environment when set there.
ENV_KEYS = (
    "DATABASE_URL",
    "RBAC_ABAC_REDIS_URL",
    "RBAC_ABAC_CACHE_TTL",
    "RBAC_ABAC_KEY_PREFIX",
    "IDP_ADMIN_TOKEN",
    "RBAC_ABAC_JWT_SECRET",
    "RBAC_ABAC_JWT_PRIVATE_KEY",
    "RBAC_ABAC_JWT_AUDIENCE",
    "RBAC_ABAC_JWT_ISSUER",
    "IDP_TOKEN_LIFETIME",
    "IDP_SIGNING_ALGORITHM",
    "IDP_SIGNING_KEY_LEEWAY",
    "IDP_REFRESH_COALESCE_SECONDS",
    "IDP_REDIS_TIMEOUT",
    "IDP_TOKEN_RATE_LIMIT_PER_USER",
    "IDP_TOKEN_RATE_LIMIT_PER_ADDRESS",
    "IDP_TOKEN_RATE_LIMIT_STORAGE_URI",
    "IDP_PROXY_FIX_X_FOR",
    "IDP_OUTBOX_WORKER",
    "IDP_OUTBOX_POLL_INTERVAL",
    "IDP_OUTBOX_BACKOFF_MAX",
    "RBAC_ABAC_VALUE_KEYS",
    "IDP_METRICS_ENABLED",
    "SECRET_KEY",
    "IDP_CONSOLE_SECURE_COOKIES",
    "IDP_CONSOLE_SESSION_LIFETIME",
)

DEFAULTS: dict[str, Any] = {
    "DATABASE_URL": None,  # None: SQLite file in the instance folder
    "RBAC_ABAC_REDIS_URL": DEFAULT_REDIS_URL,
    "RBAC_ABAC_CACHE_TTL": DEFAULT_CACHE_TTL,
    "RBAC_ABAC_KEY_PREFIX": DEFAULT_KEY_PREFIX,
    "IDP_ADMIN_TOKEN": None,
    "RBAC_ABAC_JWT_SECRET": None,
    "RBAC_ABAC_JWT_PRIVATE_KEY": None,
    "RBAC_ABAC_JWT_AUDIENCE": DEFAULT_AUDIENCE,
    "RBAC_ABAC_JWT_ISSUER": DEFAULT_ISSUER,
    "IDP_TOKEN_LIFETIME": 900,
    "IDP_SIGNING_ALGORITHM": "RS256",  # for keys the IdP generates: RS256 or ES256
    "IDP_SIGNING_KEY_LEEWAY": 60,  # a retired key stays published for lifetime + this
    "IDP_REFRESH_COALESCE_SECONDS": 1.0,
    "IDP_REDIS_TIMEOUT": 0.5,
    "IDP_OUTBOX_WORKER": None,  # None: on, except when TESTING
    "IDP_OUTBOX_POLL_INTERVAL": 0.5,
    "IDP_OUTBOX_BACKOFF_MAX": 2.0,
    "RBAC_ABAC_VALUE_KEYS": "",  # "kid:secret,...": sign values with the first
    "IDP_PASSWORD_HASH_METHOD": "scrypt",
    "MAX_CONTENT_LENGTH": 64 * 1024,
    "IDP_TOKEN_RATE_LIMIT_PER_USER": "5/minute",
    "IDP_TOKEN_RATE_LIMIT_PER_ADDRESS": "30/minute",
    "IDP_TOKEN_RATE_LIMIT_STORAGE_URI": None,  # None: the Redis URL (memory when TESTING)
    "IDP_PROXY_FIX_X_FOR": 0,  # trusted proxies in front of the IdP; 0: X-Forwarded-For ignored
    "IDP_METRICS_ENABLED": False,
    # The admin console (/admin/): signs its session cookie with SECRET_KEY (unset: console off).
    "IDP_CONSOLE_SECURE_COOKIES": None,  # None: Secure cookies, except when TESTING
    "IDP_CONSOLE_SESSION_LIFETIME": 1800,  # seconds a console session lasts without a request
}


def database_uri(url: str) -> str:
    """``url`` as a SQLAlchemy URL; plain ``postgresql://`` uses psycopg 3."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def apply_defaults(config: MutableMapping[str, Any]) -> None:
    for key, value in DEFAULTS.items():
        if config.get(key) is None:  # Flask presets MAX_CONTENT_LENGTH to None
            config[key] = value


def apply_env(config: MutableMapping[str, Any], environ: MutableMapping[str, str]) -> None:
    for key in ENV_KEYS:
        if key in environ:
            config[key] = environ[key]


def _non_empty_str(config: MutableMapping[str, Any], key: str) -> str:
    value = config[key]
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{key} must be a non-empty string, got {value!r}")
    return value


def validate(config: MutableMapping[str, Any], instance_path: str) -> None:
    """Normalise and check every key; raise :class:`ConfigurationError` naming the bad one."""
    url = config["DATABASE_URL"] or "sqlite:///" + os.path.join(instance_path, "idp.sqlite3")
    if not isinstance(url, str):
        raise ConfigurationError(f"DATABASE_URL must be a database URL, got {url!r}")
    config["DATABASE_URL"] = url
    config["SQLALCHEMY_DATABASE_URI"] = database_uri(url)
    engine_options: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith(("postgres", "postgresql")):
        engine_options["connect_args"] = {"connect_timeout": 5}
    elif url.startswith("sqlite"):
        engine_options["connect_args"] = {"timeout": 5}
    config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", engine_options)

    redis_url = _non_empty_str(config, "RBAC_ABAC_REDIS_URL")
    check_scheme(redis_url)
    config["RBAC_ABAC_CACHE_TTL"] = positive_int(
        config["RBAC_ABAC_CACHE_TTL"], "RBAC_ABAC_CACHE_TTL"
    )
    config["RBAC_ABAC_VALUE_KEYS"] = value_keys(config)
    try:
        validate_prefix(config["RBAC_ABAC_KEY_PREFIX"])
    except InvalidKeyPart as exc:
        raise ConfigurationError(f"RBAC_ABAC_KEY_PREFIX: {exc}") from exc

    token = config["IDP_ADMIN_TOKEN"]
    if token in (None, ""):
        if not config.get("TESTING"):
            raise ConfigurationError(
                "IDP_ADMIN_TOKEN is not set: the identity provider refuses to start without an "
                "admin token (set the environment variable IDP_ADMIN_TOKEN)"
            )
        config["IDP_ADMIN_TOKEN"] = None
    elif not isinstance(token, str) or len(token) < MIN_ADMIN_TOKEN_CHARS:
        raise ConfigurationError(
            f"IDP_ADMIN_TOKEN must be a string of at least {MIN_ADMIN_TOKEN_CHARS} characters"
        )

    secret = config["RBAC_ABAC_JWT_SECRET"] or None
    private_key = config["RBAC_ABAC_JWT_PRIVATE_KEY"] or None
    if secret and private_key:
        raise ConfigurationError(
            "RBAC_ABAC_JWT_SECRET and RBAC_ABAC_JWT_PRIVATE_KEY are both set; choose one algorithm"
        )
    jwt_secret(secret)
    if private_key is not None:
        _check_private_key(private_key)
    config["RBAC_ABAC_JWT_SECRET"] = secret
    config["RBAC_ABAC_JWT_PRIVATE_KEY"] = private_key
    if config["IDP_SIGNING_ALGORITHM"] not in ALGORITHMS:
        raise ConfigurationError(
            f"IDP_SIGNING_ALGORITHM must be one of {', '.join(ALGORITHMS)}, "
            f"got {config['IDP_SIGNING_ALGORITHM']!r}"
        )
    config["IDP_SIGNING_KEY_LEEWAY"] = non_negative_int(
        config["IDP_SIGNING_KEY_LEEWAY"], "IDP_SIGNING_KEY_LEEWAY"
    )
    _non_empty_str(config, "RBAC_ABAC_JWT_AUDIENCE")
    _non_empty_str(config, "RBAC_ABAC_JWT_ISSUER")
    config["IDP_TOKEN_LIFETIME"] = positive_int(config["IDP_TOKEN_LIFETIME"], "IDP_TOKEN_LIFETIME")
    config["IDP_REDIS_TIMEOUT"] = positive_float(config["IDP_REDIS_TIMEOUT"], "IDP_REDIS_TIMEOUT")
    coalesce = config["IDP_REFRESH_COALESCE_SECONDS"]
    config["IDP_REFRESH_COALESCE_SECONDS"] = (
        0.0
        if coalesce in (0, "0", "0.0")
        else positive_float(coalesce, "IDP_REFRESH_COALESCE_SECONDS")
    )
    if config["IDP_OUTBOX_WORKER"] is not None:
        config["IDP_OUTBOX_WORKER"] = as_bool(config["IDP_OUTBOX_WORKER"], "IDP_OUTBOX_WORKER")
    for key in ("IDP_OUTBOX_POLL_INTERVAL", "IDP_OUTBOX_BACKOFF_MAX"):
        config[key] = positive_float(config[key], key)
    _non_empty_str(config, "IDP_PASSWORD_HASH_METHOD")
    config["MAX_CONTENT_LENGTH"] = positive_int(config["MAX_CONTENT_LENGTH"], "MAX_CONTENT_LENGTH")
    config["IDP_METRICS_ENABLED"] = as_bool(config["IDP_METRICS_ENABLED"], "IDP_METRICS_ENABLED")
    _validate_rate_limits(config)
    _validate_console(config)


def _validate_console(config: MutableMapping[str, Any]) -> None:
    """The console's cookie settings: HttpOnly, SameSite=Lax, Secure unless configured off."""
    secret = config.get("SECRET_KEY")
    if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
        raise ConfigurationError("SECRET_KEY must be a string of at least 16 characters")
    secure = config["IDP_CONSOLE_SECURE_COOKIES"]
    secure = (
        not config.get("TESTING")
        if secure is None
        else as_bool(secure, "IDP_CONSOLE_SECURE_COOKIES")
    )
    config["IDP_CONSOLE_SECURE_COOKIES"] = secure
    config["IDP_CONSOLE_SESSION_LIFETIME"] = positive_int(
        config["IDP_CONSOLE_SESSION_LIFETIME"], "IDP_CONSOLE_SESSION_LIFETIME"
    )
    config["PERMANENT_SESSION_LIFETIME"] = config["IDP_CONSOLE_SESSION_LIFETIME"]
    config["SESSION_COOKIE_SECURE"] = secure
    config["SESSION_COOKIE_HTTPONLY"] = True
    config["SESSION_COOKIE_SAMESITE"] = "Lax"
    config["SESSION_COOKIE_NAME"] = "idp_console"
    # CSRF is checked by the console's blueprint only: the JSON API is token-authenticated.
    config["WTF_CSRF_CHECK_DEFAULT"] = False
    config["WTF_CSRF_TIME_LIMIT"] = config["IDP_CONSOLE_SESSION_LIFETIME"]


def _check_private_key(private_key: object) -> None:
    """An unencrypted PEM RSA (RS256) or P-256 (ES256) key, or an error saying which it is not."""
    if not isinstance(private_key, str) or "PRIVATE KEY" not in private_key:
        raise ConfigurationError("RBAC_ABAC_JWT_PRIVATE_KEY must be a PEM private key")
    try:
        algorithm_of(serialization.load_pem_private_key(private_key.encode(), password=None))
    except (ValueError, TypeError) as exc:  # unparsable, encrypted, or another key type
        raise ConfigurationError(
            "RBAC_ABAC_JWT_PRIVATE_KEY must be an unencrypted RSA or EC P-256 key "
            f"({type(exc).__name__})"
        ) from exc


def _validate_rate_limits(config: MutableMapping[str, Any]) -> None:
    for key in ("IDP_TOKEN_RATE_LIMIT_PER_USER", "IDP_TOKEN_RATE_LIMIT_PER_ADDRESS"):
        value = _non_empty_str(config, key)
        try:
            if any(item.amount < 1 for item in parse_many(value)):
                raise ValueError("no attempt allowed")
        except ValueError:
            raise ConfigurationError(
                f"{key} must be a rate limit such as '5/minute', got {value!r}"
            ) from None
    uri = config["IDP_TOKEN_RATE_LIMIT_STORAGE_URI"] or None
    if uri is not None and not isinstance(uri, str):
        raise ConfigurationError(f"IDP_TOKEN_RATE_LIMIT_STORAGE_URI must be a URI, got {uri!r}")
    config["IDP_TOKEN_RATE_LIMIT_STORAGE_URI"] = uri
    config["IDP_PROXY_FIX_X_FOR"] = non_negative_int(
        config["IDP_PROXY_FIX_X_FOR"], "IDP_PROXY_FIX_X_FOR"
    )

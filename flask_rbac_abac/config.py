"""Configuration keys, their defaults and their validation.

Every key can be set in ``app.config``; the ones marked with an environment variable take their
default from it, the others from :mod:`.defaults` (the one place default values are written).
Validation errors are :class:`ConfigurationError` and name the key; :func:`load` returns the
validated :class:`Settings` that the app's client is built from.

The identity provider reads its shared keys the same way: the ``DEFAULT_AUDIENCE`` /
``DEFAULT_ISSUER`` / ``DEFAULT_REDIS_URL`` defaults (from :mod:`.defaults`), :func:`jwt_secret`
and the number parsers (:func:`positive_int`, :func:`non_negative_int`, :func:`positive_float`)
are public through :mod:`flask_rbac_abac.shared` (the contract between the two); everything
else here is the library's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from .codec import parse_value_keys
from .defaults import (
    DEFAULT_ASYMMETRIC_ALGORITHMS,
    DEFAULT_AUDIENCE,
    DEFAULT_AUTO_REFRESH,
    DEFAULT_CACHE_TTL,
    DEFAULT_IDP_TIMEOUT,
    DEFAULT_IDP_URL,
    DEFAULT_INVALIDATION,
    DEFAULT_ISSUER,
    DEFAULT_JWKS_LIFESPAN,
    DEFAULT_JWKS_TIMEOUT,
    DEFAULT_JWT_USER_CLAIM,
    DEFAULT_LOCAL_CACHE_SIZE,
    DEFAULT_LOCAL_CACHE_TTL,
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_STALE,
    DEFAULT_REDIS_TIMEOUT,
    DEFAULT_REDIS_URL,
    DEFAULT_REFRESH_AHEAD,
    DEFAULT_REQUIRE_AUTHORIZATION,
    DEFAULT_SLIDING_EXPIRATION,
    DEFAULT_TOKEN_CACHE_SIZE,
)
from .errors import ConfigurationError, InvalidKeyPart
from .keys import DEFAULT_KEY_PREFIX, validate_prefix
from .model import validate_service_name

MIN_HS256_SECRET_BYTES = 32
#: Algorithms a public key or a JWKS may be used with (``RBAC_ABAC_JWT_ALGORITHMS`` picks among
#: them); HS256 is only ever used with ``RBAC_ABAC_JWT_SECRET``.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def _env(name: str, default: Any) -> Any:
    return os.environ.get(name, default)


#: key -> default (callables are evaluated at ``init_app``, so the environment is read then).
DEFAULTS: dict[str, Callable[[], Any]] = {
    "RBAC_ABAC_CACHE_TTL": lambda: _env("RBAC_ABAC_CACHE_TTL", DEFAULT_CACHE_TTL),
    "IDENTITY_PROVIDER_URL": lambda: _env("IDENTITY_PROVIDER_URL", DEFAULT_IDP_URL),
    "RBAC_ABAC_REDIS_URL": lambda: _env("RBAC_ABAC_REDIS_URL", DEFAULT_REDIS_URL),
    "RBAC_ABAC_SERVICE_TOKEN": lambda: _env("RBAC_ABAC_SERVICE_TOKEN", None),
    "RBAC_ABAC_KEY_PREFIX": lambda: _env("RBAC_ABAC_KEY_PREFIX", DEFAULT_KEY_PREFIX),
    "RBAC_ABAC_AUTO_REFRESH": lambda: _env("RBAC_ABAC_AUTO_REFRESH", DEFAULT_AUTO_REFRESH),
    "RBAC_ABAC_LOCAL_CACHE_SIZE": lambda: DEFAULT_LOCAL_CACHE_SIZE,
    "RBAC_ABAC_LOCAL_CACHE_TTL": lambda: DEFAULT_LOCAL_CACHE_TTL,
    "RBAC_ABAC_MAX_STALE": lambda: _env("RBAC_ABAC_MAX_STALE", DEFAULT_MAX_STALE),
    "RBAC_ABAC_REDIS_TIMEOUT": lambda: DEFAULT_REDIS_TIMEOUT,
    "RBAC_ABAC_IDP_TIMEOUT": lambda: DEFAULT_IDP_TIMEOUT,
    "RBAC_ABAC_INVALIDATION": lambda: _env("RBAC_ABAC_INVALIDATION", DEFAULT_INVALIDATION),
    "RBAC_ABAC_JWT_SECRET": lambda: _env("RBAC_ABAC_JWT_SECRET", None),
    "RBAC_ABAC_JWT_PUBLIC_KEY": lambda: _env("RBAC_ABAC_JWT_PUBLIC_KEY", None),
    "RBAC_ABAC_JWKS_URL": lambda: _env("RBAC_ABAC_JWKS_URL", None),
    "RBAC_ABAC_JWKS_TIMEOUT": lambda: DEFAULT_JWKS_TIMEOUT,
    "RBAC_ABAC_JWKS_LIFESPAN": lambda: DEFAULT_JWKS_LIFESPAN,
    "RBAC_ABAC_JWT_ALGORITHMS": lambda: _env("RBAC_ABAC_JWT_ALGORITHMS", None),
    "RBAC_ABAC_JWT_USER_CLAIM": lambda: _env("RBAC_ABAC_JWT_USER_CLAIM", DEFAULT_JWT_USER_CLAIM),
    "RBAC_ABAC_JWT_AUDIENCE": lambda: _env("RBAC_ABAC_JWT_AUDIENCE", DEFAULT_AUDIENCE),
    "RBAC_ABAC_JWT_ISSUER": lambda: _env("RBAC_ABAC_JWT_ISSUER", DEFAULT_ISSUER),
    "RBAC_ABAC_TOKEN_CACHE_SIZE": lambda: DEFAULT_TOKEN_CACHE_SIZE,
    "RBAC_ABAC_REQUIRE_AUTHORIZATION": lambda: _env(
        "RBAC_ABAC_REQUIRE_AUTHORIZATION", DEFAULT_REQUIRE_AUTHORIZATION
    ),
    "RBAC_ABAC_VALUE_KEYS": lambda: _env("RBAC_ABAC_VALUE_KEYS", None),
    "RBAC_ABAC_METRICS_ENDPOINT": lambda: _env("RBAC_ABAC_METRICS_ENDPOINT", None),
    "RBAC_ABAC_REFRESH_AHEAD": lambda: _env("RBAC_ABAC_REFRESH_AHEAD", DEFAULT_REFRESH_AHEAD),
    "RBAC_ABAC_SLIDING_EXPIRATION": lambda: _env(
        "RBAC_ABAC_SLIDING_EXPIRATION", DEFAULT_SLIDING_EXPIRATION
    ),
    "RBAC_ABAC_SLIDING_INTERVAL": lambda: _env("RBAC_ABAC_SLIDING_INTERVAL", None),
    "RBAC_ABAC_MAX_AGE": lambda: _env("RBAC_ABAC_MAX_AGE", DEFAULT_MAX_AGE),
}


def positive_int(value: object, key: str) -> int:
    """``value`` as an int > 0 (ints or decimal strings); else an error naming ``key``."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigurationError(f"{key} must be a positive integer, got {value!r}")
    return value


def non_negative_int(value: object, key: str) -> int:
    """``value`` as an int >= 0 (``0`` turns a feature off); else an error naming ``key``."""
    if value in (0, "0"):
        return 0
    return positive_int(value, key)


def positive_float(value: object, key: str) -> float:
    """``value`` as a float > 0 (numbers or numeric strings); else an error naming ``key``."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not number > 0:
        raise ConfigurationError(f"{key} must be a positive number of seconds, got {value!r}")
    return number


def fraction(value: object, key: str) -> float:
    """``value`` as a number in ``[0, 1)`` (``0`` turns a feature off); else an error naming
    ``key``."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not 0 <= number < 1:
        raise ConfigurationError(f"{key} must be a fraction in [0, 1), got {value!r}")
    return number


def as_bool(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{key} must be a boolean, got {value!r}")


def http_url(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ConfigurationError(f"{key} must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


def metrics_endpoint(value: object) -> str | None:
    """``RBAC_ABAC_METRICS_ENDPOINT``: ``None`` or empty (no endpoint), or a path: ``/metrics``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        raise ConfigurationError(
            f"RBAC_ABAC_METRICS_ENDPOINT must be a URL path such as '/metrics', got {value!r}"
        )
    return value


def jwt_secret(value: object) -> str | None:
    """``RBAC_ABAC_JWT_SECRET``: ``None`` or a string of at least 32 bytes (HS256)."""
    if value is not None and (
        not isinstance(value, str) or len(value.encode()) < MIN_HS256_SECRET_BYTES
    ):
        raise ConfigurationError(
            f"RBAC_ABAC_JWT_SECRET must be a string of at least {MIN_HS256_SECRET_BYTES} bytes"
        )
    return value


def jwt_algorithms(value: object, *, symmetric: bool) -> tuple[str, ...]:
    """``RBAC_ABAC_JWT_ALGORITHMS``: a list or a comma-separated string; ``None`` for the default.

    With a secret only HS256 is allowed; with a public key or a JWKS only asymmetric algorithms,
    so a public key can never be used as an HMAC secret (the classic algorithm confusion).
    """
    if value is None or value == "":
        return ("HS256",) if symmetric else DEFAULT_ASYMMETRIC_ALGORITHMS
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names:
        raise ConfigurationError(f"RBAC_ABAC_JWT_ALGORITHMS must be a list, got {value!r}")
    allowed = {"HS256"} if symmetric else ASYMMETRIC_ALGORITHMS
    out = []
    for name in names:
        name = name.strip() if isinstance(name, str) else name
        if name not in allowed:
            raise ConfigurationError(
                f"RBAC_ABAC_JWT_ALGORITHMS: {name!r} is not allowed with "
                + ("RBAC_ABAC_JWT_SECRET" if symmetric else "a public key or RBAC_ABAC_JWKS_URL")
                + f" (allowed: {', '.join(sorted(allowed))})"
            )
        out.append(name)
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The validated configuration of one app (what :func:`load` returns).

    ``init_app`` builds the app's :class:`.RedisAttributeClient` from it
    (:meth:`.RedisAttributeClient.from_settings`). Every field but ``service_name`` has the
    library's default (:mod:`.defaults`), so a client built outside Flask gets the same ones.
    """

    service_name: str
    cache_ttl: int = DEFAULT_CACHE_TTL
    identity_provider_url: str = DEFAULT_IDP_URL
    redis_url: str = DEFAULT_REDIS_URL
    service_token: str | None = None
    key_prefix: str = DEFAULT_KEY_PREFIX
    auto_refresh: bool = DEFAULT_AUTO_REFRESH
    local_cache_size: int = DEFAULT_LOCAL_CACHE_SIZE
    local_cache_ttl: float = DEFAULT_LOCAL_CACHE_TTL
    max_stale: float = DEFAULT_MAX_STALE
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT
    idp_timeout: tuple[float, float] = DEFAULT_IDP_TIMEOUT
    invalidation: bool = DEFAULT_INVALIDATION
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_audience: str = DEFAULT_AUDIENCE
    jwt_issuer: str = DEFAULT_ISSUER
    token_cache_size: int = DEFAULT_TOKEN_CACHE_SIZE
    #: Refuse (403 ``no_rule``) a view with neither a rule nor ``@public``.
    require_authorization: bool = DEFAULT_REQUIRE_AUTHORIZATION
    #: Where the verification keys are published (an IdP's ``/.well-known/jwks.json``).
    jwks_url: str | None = None
    #: Seconds for each socket operation of a JWKS fetch.
    jwks_timeout: float = DEFAULT_JWKS_TIMEOUT
    #: Seconds a fetched JWKS is used before it is fetched again.
    jwks_lifespan: int = DEFAULT_JWKS_LIFESPAN
    #: Algorithms a token may be signed with; empty: the default for the key kind.
    jwt_algorithms: tuple[str, ...] = ()
    #: The claim that carries the user id.
    jwt_user_claim: str = DEFAULT_JWT_USER_CLAIM
    #: value-signing keys (key id -> secret); when set, unsigned values in Redis are misses
    value_keys: dict[str, bytes] = field(default_factory=dict)
    #: Serve Prometheus metrics at this path (``None``: no endpoint).
    metrics_endpoint: str | None = None
    #: Fraction of the TTL left below which a read refreshes the entry in the background.
    refresh_ahead: float = DEFAULT_REFRESH_AHEAD
    #: Reads extend the entry's Redis TTL back to ``cache_ttl`` (batched, at most once a key
    #: per ``sliding_interval``), never past ``max_age`` since its ``fetched_at``.
    sliding_expiration: bool = DEFAULT_SLIDING_EXPIRATION
    #: Seconds between two extensions of one key; ``None``: a tenth of ``cache_ttl``.
    sliding_interval: float | None = None
    #: Seconds since ``fetched_at`` past which sliding stops and a read refreshes from the IdP.
    max_age: int = DEFAULT_MAX_AGE


def value_keys(config: MutableMapping[str, Any]) -> dict[str, bytes]:
    """``RBAC_ABAC_VALUE_KEYS`` parsed, or a :class:`ConfigurationError` naming it."""
    try:
        return parse_value_keys(config.get("RBAC_ABAC_VALUE_KEYS"))
    except InvalidKeyPart as exc:
        raise ConfigurationError(str(exc)) from exc


def load(config: MutableMapping[str, Any]) -> Settings:
    """Fill in defaults (``setdefault``) and validate every key of ``config``."""
    for key, default in DEFAULTS.items():
        config.setdefault(key, default())

    service = config.get("SERVICE_NAME")
    if not service:
        raise ConfigurationError("SERVICE_NAME is required: the name this service has at the IdP")
    try:
        service = validate_service_name(service)
        prefix = validate_prefix(config["RBAC_ABAC_KEY_PREFIX"])
    except InvalidKeyPart as exc:
        key = "SERVICE_NAME" if "service_name" in str(exc) else "RBAC_ABAC_KEY_PREFIX"
        raise ConfigurationError(f"{key}: {exc}") from exc

    idp_timeout = config["RBAC_ABAC_IDP_TIMEOUT"]
    if isinstance(idp_timeout, (int, float, str)):
        idp_timeout = (idp_timeout, idp_timeout)
    if not isinstance(idp_timeout, (tuple, list)) or len(idp_timeout) != 2:
        raise ConfigurationError(
            f"RBAC_ABAC_IDP_TIMEOUT must be seconds or (connect, read), got {idp_timeout!r}"
        )

    secret = jwt_secret(config["RBAC_ABAC_JWT_SECRET"])
    public_key = config["RBAC_ABAC_JWT_PUBLIC_KEY"]
    if public_key is not None and (
        not isinstance(public_key, str) or "BEGIN PUBLIC KEY" not in public_key
    ):
        raise ConfigurationError("RBAC_ABAC_JWT_PUBLIC_KEY must be a PEM public key")
    jwks_url = config["RBAC_ABAC_JWKS_URL"] or None
    if jwks_url is not None:
        jwks_url = http_url(jwks_url, "RBAC_ABAC_JWKS_URL")
    if sum(bool(k) for k in (secret, public_key, jwks_url)) > 1:
        raise ConfigurationError(
            "more than one of RBAC_ABAC_JWT_SECRET, RBAC_ABAC_JWT_PUBLIC_KEY and "
            "RBAC_ABAC_JWKS_URL is set; choose one way to verify tokens"
        )
    user_claim = config["RBAC_ABAC_JWT_USER_CLAIM"]
    if not isinstance(user_claim, str) or not user_claim:
        raise ConfigurationError("RBAC_ABAC_JWT_USER_CLAIM must be a non-empty string")
    token = config["RBAC_ABAC_SERVICE_TOKEN"]
    if token is not None and not isinstance(token, str):
        raise ConfigurationError("RBAC_ABAC_SERVICE_TOKEN must be a string")
    for key in ("RBAC_ABAC_REDIS_URL", "RBAC_ABAC_JWT_AUDIENCE", "RBAC_ABAC_JWT_ISSUER"):
        if not isinstance(config[key], str) or not config[key]:
            raise ConfigurationError(f"{key} must be a non-empty string")

    return Settings(
        service_name=service,
        cache_ttl=positive_int(config["RBAC_ABAC_CACHE_TTL"], "RBAC_ABAC_CACHE_TTL"),
        identity_provider_url=http_url(config["IDENTITY_PROVIDER_URL"], "IDENTITY_PROVIDER_URL"),
        redis_url=config["RBAC_ABAC_REDIS_URL"],
        service_token=token or None,
        key_prefix=prefix,
        auto_refresh=as_bool(config["RBAC_ABAC_AUTO_REFRESH"], "RBAC_ABAC_AUTO_REFRESH"),
        local_cache_size=positive_int(
            config["RBAC_ABAC_LOCAL_CACHE_SIZE"], "RBAC_ABAC_LOCAL_CACHE_SIZE"
        ),
        local_cache_ttl=positive_int(
            config["RBAC_ABAC_LOCAL_CACHE_TTL"], "RBAC_ABAC_LOCAL_CACHE_TTL"
        ),
        max_stale=non_negative_int(config["RBAC_ABAC_MAX_STALE"], "RBAC_ABAC_MAX_STALE"),
        redis_timeout=positive_float(config["RBAC_ABAC_REDIS_TIMEOUT"], "RBAC_ABAC_REDIS_TIMEOUT"),
        idp_timeout=(
            positive_float(idp_timeout[0], "RBAC_ABAC_IDP_TIMEOUT"),
            positive_float(idp_timeout[1], "RBAC_ABAC_IDP_TIMEOUT"),
        ),
        invalidation=as_bool(config["RBAC_ABAC_INVALIDATION"], "RBAC_ABAC_INVALIDATION"),
        jwt_secret=secret,
        jwt_public_key=public_key,
        jwt_audience=config["RBAC_ABAC_JWT_AUDIENCE"],
        jwt_issuer=config["RBAC_ABAC_JWT_ISSUER"],
        token_cache_size=positive_int(
            config["RBAC_ABAC_TOKEN_CACHE_SIZE"], "RBAC_ABAC_TOKEN_CACHE_SIZE"
        ),
        require_authorization=as_bool(
            config["RBAC_ABAC_REQUIRE_AUTHORIZATION"], "RBAC_ABAC_REQUIRE_AUTHORIZATION"
        ),
        jwks_url=jwks_url,
        jwks_timeout=positive_float(config["RBAC_ABAC_JWKS_TIMEOUT"], "RBAC_ABAC_JWKS_TIMEOUT"),
        jwks_lifespan=positive_int(config["RBAC_ABAC_JWKS_LIFESPAN"], "RBAC_ABAC_JWKS_LIFESPAN"),
        jwt_algorithms=jwt_algorithms(config["RBAC_ABAC_JWT_ALGORITHMS"], symmetric=bool(secret)),
        jwt_user_claim=user_claim,
        value_keys=value_keys(config),
        metrics_endpoint=metrics_endpoint(config["RBAC_ABAC_METRICS_ENDPOINT"]),
        refresh_ahead=fraction(config["RBAC_ABAC_REFRESH_AHEAD"], "RBAC_ABAC_REFRESH_AHEAD"),
        sliding_expiration=as_bool(
            config["RBAC_ABAC_SLIDING_EXPIRATION"], "RBAC_ABAC_SLIDING_EXPIRATION"
        ),
        sliding_interval=(
            None
            if config["RBAC_ABAC_SLIDING_INTERVAL"] in (None, "")
            else positive_float(config["RBAC_ABAC_SLIDING_INTERVAL"], "RBAC_ABAC_SLIDING_INTERVAL")
        ),
        max_age=positive_int(config["RBAC_ABAC_MAX_AGE"], "RBAC_ABAC_MAX_AGE"),
    )

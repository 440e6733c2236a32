"""``flask --app <service> rbac-abac ...``: check a live deployment, refresh an entry, counters.

``check`` is the origin note's ``test_redis_cache_refresh.py`` as a command: Redis connectivity
and latency, the TTL actually applied to a written key, the identity provider's reachability,
automatic refresh (evict a real user's entry and read it back through the IdP) and manual
refresh. One line per check, ``ok ...`` or ``FAIL ... (hint: ...)``; exit status 0 only when
every check passed. The hints are the origin note's troubleshooting list.

``routes`` lists every route with its methods and what protects it (the rules, ``public``,
``UNPROTECTED`` or ``MISPLACED RULE``), and fails when a route would be refused or served
without a decision: usable in CI.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
import requests
from flask import current_app
from flask.cli import AppGroup

from . import metrics
from ._names import EXTENSION_KEY, PASS_THROUGH_METHODS
from .client import RedisAttributeClient
from .defaults import DEFAULT_IDP_URL
from .errors import IdentityProviderError, InvalidKeyPart, RBACABACError
from .model import UserAttributes, validate_user_id
from .routes import Protection, ViewProtection, blueprint_rules, classify

rbac_abac_cli = AppGroup(
    "rbac-abac",
    help="flask-rbac-abac: deployment self-check, route listing, cache refresh and statistics.",
)

#: Seconds a probe entry's TTL may be below the configured TTL (the time to read it back).
TTL_SLACK = 5


class CheckFailed(Exception):
    """A check did not pass: ``str(self)`` says what was seen, ``hint`` what to look at."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def _client() -> RedisAttributeClient:
    extension = current_app.extensions.get(EXTENSION_KEY)
    if extension is None:
        raise click.ClickException("flask_rbac_abac is not initialised on this app")
    client: RedisAttributeClient = extension.client
    return client


def _user_id(value: str) -> int | str:
    try:
        return validate_user_id(value)
    except InvalidKeyPart as exc:
        raise click.BadParameter(str(exc)) from None


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(parts.password, "***", 1)))


# -- hints (the origin note's troubleshooting list) -----------------------------------------


def _redis_hint() -> str:
    url = _redacted(str(current_app.config.get("RBAC_ABAC_REDIS_URL")))
    return f"check RBAC_ABAC_REDIS_URL ({url}) and that Redis is running and reachable from here"


def _ttl_hint(configured: int) -> str:
    env = os.environ.get("RBAC_ABAC_CACHE_TTL")
    seen = f"environment says {env!r}" if env is not None else "not set in the environment"
    return (
        f"TTL not applied: verify RBAC_ABAC_CACHE_TTL ({seen}; this service uses {configured} s) "
        "is the same for this service and the identity provider, and that both run the "
        "updated code"
    )


def _idp_url() -> str:
    return str(current_app.config.get("IDENTITY_PROVIDER_URL"))


def _idp_hint(reason: str, status: int | None = None, code: str | None = None) -> str:
    """The troubleshooting hint for an identity provider failure (see IdentityProviderError)."""
    url = _idp_url()
    service = _client().service_name
    if code == "service_not_registered":
        return (
            f"service manifest not registered: register {service!r} at the identity provider "
            f"(POST {url}/api/services/ or `flask --app idp_app create-service {service}`)"
        )
    if reason == "refused" and status == 401:
        return (
            "the identity provider refused this service's token: set RBAC_ABAC_SERVICE_TOKEN to "
            f"the token the IdP issued for {service!r}"
        )
    if reason == "refused" and status == 403:
        return (
            f"RBAC_ABAC_SERVICE_TOKEN belongs to another service, not {service!r}: use the token "
            f"issued for {service!r}"
        )
    if reason in ("redirect", "bad_answer") or status in (404, 405):
        return (
            f"wrong IDENTITY_PROVIDER_URL ({url}): something answers there but it is not the "
            "identity provider's API; use the IdP's base URL, without a path"
        )
    if reason in ("unreachable", "breaker_open"):
        default = " (IDENTITY_PROVIDER_URL is not set: this is the default)"
        return (
            f"identity provider unreachable at {url}"
            + (default if url == DEFAULT_IDP_URL else "")
            + ": check IDENTITY_PROVIDER_URL, the network between the services and that the "
            "IdP is running"
        )
    if reason == "server_error":
        return "the identity provider failed: check its logs, its database and its Redis"
    return "check the identity provider's logs for this request"


def _hint_for(exc: RBACABACError) -> str:
    if isinstance(exc, IdentityProviderError):
        return _idp_hint(exc.reason, exc.status, exc.code)
    return _redis_hint()


def _user_hint(user_id: int | str) -> str:
    return (
        f"user {user_id} is unknown to this service at the identity provider (no such user, "
        "deactivated, or no role in this service): pass --user-id of an active user with a role"
    )


def _roles_hint(user_id: int | str) -> str:
    service = _client().service_name
    return (
        f"user without active roles: give user {user_id} a role in {service!r} at the identity "
        f"provider (PUT /api/users/{user_id}/roles/{service}), and check the service manifest "
        "defines it"
    )


# -- the checks -----------------------------------------------------------------------------


def check_redis(client: RedisAttributeClient) -> str:
    started = time.perf_counter()
    try:
        client.redis.ping()
    except Exception as exc:
        raise CheckFailed(f"Redis unreachable: {type(exc).__name__}: {exc}", _redis_hint()) from exc
    latency = (time.perf_counter() - started) * 1000
    url = _redacted(str(current_app.config.get("RBAC_ABAC_REDIS_URL")))
    return f"Redis reachable at {url} (PING {latency:.1f} ms)"


def check_ttl(client: RedisAttributeClient) -> str:
    probe = f"rbac-abac-check-{uuid.uuid4().hex[:12]}"
    attrs = UserAttributes(
        user_id=probe, service_name=client.service_name, attributes={"probe": True}
    )
    key = client.key(probe)
    try:
        client.set_user_attributes(attrs)
        ttl = int(client.redis.ttl(key))
    except Exception as exc:
        raise CheckFailed(f"could not write a probe entry: {exc}", _redis_hint()) from exc
    finally:
        try:
            client.invalidate(probe)
        except Exception:  # noqa: S110 - best effort; the entry has a TTL anyway
            pass
    if ttl < 0:
        raise CheckFailed(f"probe entry {key} was written without a TTL", _ttl_hint(client.ttl))
    if not client.ttl - TTL_SLACK <= ttl <= client.ttl:
        raise CheckFailed(
            f"probe entry {key} has TTL {ttl} s, configured {client.ttl} s", _ttl_hint(client.ttl)
        )
    return f"TTL applied: a written entry expires in {ttl} s (configured {_duration(client.ttl)})"


def check_idp(client: RedisAttributeClient) -> str:
    health = client.idp.health()
    if health.get("ok"):
        return f"identity provider reachable at {health.get('url')} (GET /healthz 200)"
    if "error" in health:
        raise CheckFailed(
            f"identity provider unreachable at {health.get('url')}: {health['error']}",
            _idp_hint("unreachable"),
        )
    status = health.get("status")
    if status == 404:
        raise CheckFailed(
            f"GET {health.get('url')}/healthz answered 404", _idp_hint("bad_answer", 404)
        )
    raise CheckFailed(
        f"identity provider at {health.get('url')} is unhealthy (GET /healthz {status})",
        "the identity provider failed: check its logs, its database and its Redis",
    )


def _check_entry(
    client: RedisAttributeClient, attrs: UserAttributes, user_id: int | str
) -> tuple[int, str]:
    key = client.key(user_id)
    ttl = int(client.redis.ttl(key))
    if ttl == -2:
        raise CheckFailed(
            f"the identity provider answered but {key} is not in Redis",
            "the IdP writes another Redis or key prefix: RBAC_ABAC_REDIS_URL and "
            "RBAC_ABAC_KEY_PREFIX must be the same for this service and the identity provider",
        )
    if ttl < 0 or not client.ttl - TTL_SLACK <= ttl <= client.ttl:
        raise CheckFailed(
            f"the identity provider wrote {key} with TTL {ttl} s, this service expects "
            f"{client.ttl} s",
            _ttl_hint(client.ttl),
        )
    if not attrs.roles:
        raise CheckFailed(
            f"user {user_id} has no roles in {client.service_name!r}", _roles_hint(user_id)
        )
    return ttl, ", ".join(attrs.roles)


def check_auto_refresh(client: RedisAttributeClient, user_id: int | str) -> str:
    key = client.key(user_id)
    try:
        client.invalidate(user_id)
    except Exception as exc:
        raise CheckFailed(f"could not evict {key}: {exc}", _redis_hint()) from exc
    before = int(client.stats().get("auto_refreshes", 0))
    try:
        attrs = client.get_user_attributes(user_id, auto_refresh=True)
    except RBACABACError as exc:
        raise CheckFailed(f"automatic refresh failed: {exc}", _hint_for(exc)) from exc
    if attrs is None:
        raise CheckFailed(f"automatic refresh of user {user_id} found nothing", _user_hint(user_id))
    if int(client.stats().get("auto_refreshes", 0)) <= before:
        raise CheckFailed(
            f"user {user_id} came back without a refresh from the identity provider",
            "another process rewrote the entry at the same moment; run the check again",
        )
    ttl, roles = _check_entry(client, attrs, user_id)
    return (
        f"automatic refresh: evicted {key}, read it back through the identity provider "
        f"(roles {roles}; TTL {ttl} s)"
    )


def check_manual_refresh(client: RedisAttributeClient, user_id: int | str) -> str:
    try:
        attrs = client.refresh_user_attributes_from_identity_provider(user_id)
    except RBACABACError as exc:
        raise CheckFailed(f"manual refresh failed: {exc}", _hint_for(exc)) from exc
    if attrs is None:
        raise CheckFailed(f"manual refresh of user {user_id} found nothing", _user_hint(user_id))
    ttl, roles = _check_entry(client, attrs, user_id)
    return (
        f"manual refresh: POST {_idp_url()}/api/refresh-user-cache/ rewrote the entry "
        f"(version {attrs.version}; roles {roles}; TTL {ttl} s)"
    )


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds} s = {seconds // 3600} h"
    return f"{seconds} s"


@rbac_abac_cli.command("check")
@click.option(
    "--user-id",
    required=True,
    help="A real, active user at the identity provider with a role in this service.",
)
def check_command(user_id: str) -> None:
    """Check this deployment: Redis, the cache TTL, and automatic and manual refresh.

    Prints one line per check and exits 0 only when every check passed.
    """
    user = _user_id(user_id)
    client = _client()
    checks: list[Callable[[], str]] = [
        lambda: check_redis(client),
        lambda: check_ttl(client),
        lambda: check_idp(client),
        lambda: check_auto_refresh(client, user),
        lambda: check_manual_refresh(client, user),
    ]
    failures = 0
    for run in checks:
        try:
            click.echo(f"ok   {run()}")
        except CheckFailed as exc:
            failures += 1
            click.echo(f"FAIL {exc} (hint: {exc.hint})")
        except Exception as exc:  # an unexpected error is a failed check, not a traceback
            failures += 1
            click.echo(f"FAIL {type(exc).__name__}: {exc} (hint: {_redis_hint()})")
    if failures:
        click.echo(f"{failures} of {len(checks)} checks failed")
        raise SystemExit(1)
    click.echo(f"all {len(checks)} checks passed for service {client.service_name!r}")


@rbac_abac_cli.command("refresh")
@click.argument("user_id")
@click.option("--service", default=None, help="Service name (default: this app's SERVICE_NAME).")
def refresh_command(user_id: str, service: str | None) -> None:
    """Ask the identity provider to rebuild USER_ID's entry now, and print it as JSON."""
    user = _user_id(user_id)
    client = _client()
    try:
        attrs = client.refresh_user_attributes_from_identity_provider(user, service)
    except RBACABACError as exc:
        raise click.ClickException(f"{exc} (hint: {_hint_for(exc)})") from None
    if attrs is None:
        raise click.ClickException(_user_hint(user))
    out: dict[str, Any] = {"key": client.key(user, service), **attrs.to_dict()}
    click.echo(json.dumps(out, indent=2, sort_keys=True))


def _service_stats(base_url: str, timeout: float) -> dict[str, Any]:
    """The whole running service's counters, read from its metrics endpoint at ``base_url``."""
    path = current_app.extensions["rbac_abac"].settings.metrics_endpoint
    if path is None:
        raise click.ClickException(
            "--url needs RBAC_ABAC_METRICS_ENDPOINT: the service serves no metrics endpoint"
        )
    if not metrics.AVAILABLE:
        raise click.ClickException("--url needs prometheus_client (the prometheus extra)")
    url = base_url.rstrip("/") + path
    try:
        response = requests.get(url, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise click.ClickException(f"GET {url} failed: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise click.ClickException(f"GET {url} answered {response.status_code}, not metrics")
    try:
        out = metrics.parse_stats(response.text, _client().service_name)
    except ValueError as exc:
        raise click.ClickException(f"GET {url} answered no Prometheus text: {exc}") from None
    out["source"] = url
    return out


@rbac_abac_cli.command("stats")
@click.option(
    "--url",
    envvar="RBAC_ABAC_STATS_URL",
    default=None,
    help="Base URL of the running service (e.g. http://127.0.0.1:8000): read its metrics "
    "endpoint, so the counters are every worker's. Default: this process's own counters.",
)
@click.option(
    "--timeout", default=5.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds."
)
def stats_command(url: str | None, timeout: float) -> None:
    """Print the cache counters as JSON: the running service's with --url, else this process's.

    Without --url the counters are the ones this command's own process made (mostly zero): each
    process counts for itself. With --url and RBAC_ABAC_METRICS_ENDPOINT they are the service's
    (every worker's under PROMETHEUS_MULTIPROC_DIR, else the worker that answered).
    """
    stats = _client().stats() if url is None else _service_stats(url, timeout)
    click.echo(json.dumps(stats, indent=2, sort_keys=True, default=str))


def _route_protections(
    endpoint: str, methods: set[str], view: Any
) -> list[tuple[list[str], ViewProtection]]:
    """The route's methods grouped by protection (a class-based view may differ per method)."""
    shown = sorted(methods - PASS_THROUGH_METHODS - ({"HEAD"} if "GET" in methods else set()))
    groups: dict[ViewProtection, list[str]] = {}
    inherited = blueprint_rules(current_app.blueprints, endpoint)
    for method in shown:
        groups.setdefault(classify(endpoint, view, method, inherited), []).append(method)
    return [(group, protection) for protection, group in groups.items()]


@rbac_abac_cli.command("routes")
@click.option(
    "--strict",
    is_flag=True,
    help="Fail on an unprotected view even when RBAC_ABAC_REQUIRE_AUTHORIZATION is off.",
)
def routes_command(strict: bool) -> None:
    """List every route with its methods and its rule, ``public`` or ``UNPROTECTED``.

    Exits 1 when a rule decorator is misplaced (above the route decorator), or when a view is
    unprotected and RBAC_ABAC_REQUIRE_AUTHORIZATION is on (or ``--strict``).
    """
    extension = current_app.extensions.get(EXTENSION_KEY)
    if extension is None:
        raise click.ClickException("flask_rbac_abac is not initialised on this app")
    required = strict or bool(extension.settings.require_authorization)
    rows: list[tuple[tuple[str, str, str], ViewProtection]] = []
    for rule in sorted(current_app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        view = current_app.view_functions.get(rule.endpoint)
        for methods, protection in _route_protections(rule.endpoint, set(rule.methods or ()), view):
            rows.append(((",".join(methods), rule.rule, rule.endpoint), protection))
    widths = [max((len(cells[i]) for cells, _ in rows), default=0) for i in range(3)]
    counts = dict.fromkeys(Protection, 0)
    for cells, protection in rows:
        counts[protection.kind] += 1
        columns = "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        click.echo(f"{columns}  {protection.describe()}")
    unprotected, misplaced = counts[Protection.UNPROTECTED], counts[Protection.MISPLACED]
    click.echo(
        f"{len(rows)} routes: {counts[Protection.PROTECTED]} protected, "
        f"{counts[Protection.PUBLIC]} public, {unprotected} unprotected, {misplaced} misplaced, "
        f"{counts[Protection.STATIC]} static"
        + ("" if required else " (RBAC_ABAC_REQUIRE_AUTHORIZATION is off)")
    )
    if misplaced or (required and unprotected):
        raise SystemExit(1)

"""In-process throughput: each case's app called directly as WSGI (``app.wsgi_app`` with an
environ from Werkzeug's ``EnvironBuilder``): no server, no socket, so the authorization's own
cost is what differs between cases.

Sync cases are compared with the bare sync view, async ones (``async def`` views, Flask's async
support) with the bare async view. flask-rbac-abac runs without its invalidation subscriber
here (nothing publishes); the token is verified once, in the warm-up, and then comes from the
verified-token cache, as it does after a caller's first request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask
from werkzeug.test import EnvironBuilder

from bench import apps
from bench.common import alternate, token


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    app: str
    path: str
    baseline: str
    l1: bool = True


CASES = [
    Case("bare", "bare view (baseline)", "bare", "/r", "bare"),
    Case("open", "extension installed, open route", "open", "/r", "bare"),
    Case("protected_l1", "protected (requires_role), L1 hit", "protected", "/r", "bare"),
    Case(
        "protected_l2",
        "protected, L2 hit (L1 cleared per request)",
        "protected",
        "/r",
        "bare",
        l1=False,
    ),
    Case("byhand", "one Redis GET per request, by hand", "byhand", "/r", "bare"),
    Case("casbin", "pycasbin enforcer (flask-authz style)", "casbin", "/r", "bare"),
    Case("principal", "Flask-Principal Permission(RoleNeed)", "principal", "/r", "bare"),
    Case("async_bare", "bare async view (async baseline)", "bare", "/a", "async_bare"),
    Case("async_open", "extension installed, open async view", "open", "/a", "async_bare"),
    Case("async_protected_l1", "protected async view, L1 hit", "protected", "/a", "async_bare"),
]


def _ok(status: str, headers: list[tuple[str, str]]) -> None:
    if not status.startswith("200"):
        raise AssertionError(f"expected 200, got {status}")


def _call(app: Flask, case: Case, headers: dict[str, str]) -> Callable[[], object]:
    environ = EnvironBuilder(path=case.path, headers=headers).get_environ()
    wsgi = app.wsgi_app
    if case.l1:
        return lambda: b"".join(wsgi(dict(environ), _ok))
    local = apps.client_of(app).local

    def l2_hit() -> bytes:
        local.clear()  # L1 cannot be configured away (its size and TTL must be positive)
        return b"".join(wsgi(dict(environ), _ok))

    return l2_hit


def run(prefix: str, *, seconds: float, rounds: int) -> dict[str, Any]:
    """Every case alternately, about ``seconds`` of requests per round; per case the median
    seconds per request and the median per-round throughput ratio to its baseline."""
    headers = {"Authorization": f"Bearer {token()}"}
    built: dict[str, Flask] = {}
    calls: dict[str, Callable[[], object]] = {}
    for case in CASES:
        # The L2 case gets an app (and L1) of its own, so clearing it leaves the L1 case alone.
        name = case.app if case.l1 else f"{case.app}-l2"
        if name not in built:
            built[name] = apps.create_app(case.app, prefix=prefix, invalidation=False)
        app = built[name]
        response = app.test_client().get(case.path, headers=headers)  # warm-up: token cached
        if response.status_code != 200:
            raise AssertionError(f"{case.key}: {response.status_code} {response.get_data()!r}")
        calls[case.key] = _call(app, case, headers)
    timed = alternate(calls, seconds=seconds, rounds=rounds)
    results: dict[str, Any] = {}
    for case in CASES:
        per_request = timed.median(case.key)
        results[case.key] = {
            "label": case.label,
            "path": case.path,
            "requests_per_round": timed.calls[case.key],
            "baseline": case.baseline,
            "us_per_request": per_request * 1e6,
            "requests_per_second": 1 / per_request,
            "ratio": timed.ratio(case.key, case.baseline),
        }
    # The labels hold: the L1 case read Redis once (its warm-up), the L2 case hit Redis every
    # time and never went further.
    l1 = apps.client_of(built["protected"]).stats()
    l2 = apps.client_of(built["protected-l2"]).stats()
    l1_reads_of_l2 = l1["l2_hits"] + l1["l2_misses"]  # its warm-up, and once per L1 TTL after it
    if l1_reads_of_l2 > 1 + l1["l1_hits"] // 1000 or l2["l2_misses"] or l2["auto_refreshes"]:
        raise AssertionError(f"the L1/L2 cases did not hit where they say: {l1} {l2}")
    for app in built.values():
        if any(isinstance(e, apps.RBACABAC) for e in app.extensions.values()):
            apps.client_of(app).close()
    return {"seconds": seconds, "rounds": rounds, "cases": results}

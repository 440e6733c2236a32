"""Invalidation latency: from the IdP's answer to a role change until every worker denies.

The real system on loopback, as ``scripts/demo.py`` and the e2e tests run it
(``scripts/stack.py``): a redis-server of its own on a free port, the IdP (``idp_app``, SQLite
in a temporary directory, seeded with the demo users) and billing_api (``example_service``) as
two single-worker gunicorn servers on ports of their own, so each worker is polled by itself.

One trial: alice (admin) is allowed ``GET /stats`` (``requires_role("admin")``) by both workers;
the IdP's admin API replaces her roles in billing_api (see :data:`VARIANTS`); the clock starts
when the IdP's HTTP answer arrives, and stops when the last worker answers 403 (each worker
polled by a thread of its own, one request per poll, a new connection each). Then the role is
granted again and both workers must allow her before the next trial. The two variants take
turns; a trial that does not see both denials within :data:`TRIAL_BOUND` counts as infinite.
"""

from __future__ import annotations

import http.client
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt

from bench.common import stack_tools

ROUTE = "/stats"
USER = "alice"
#: Most seconds one trial may wait for the workers; past it the trial counts as a timeout.
TRIAL_BOUND = 5.0
#: What a trial changes: her admin role replaced by viewer (she stays in the service: the
#: workers read the rewritten entry), or her last role removed (her entry goes; each worker
#: asks the IdP, which answers that she has no role there).
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "role_revoked": ("admin role revoked (viewer kept)", ["viewer"]),
    "last_role_revoked": ("last role revoked (no role left)", []),
}


def status(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """One GET on a new connection (gunicorn's sync workers close each one)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def first_answer(port: int, want: int, headers: dict[str, str], deadline: float) -> float:
    """Poll one port until it answers ``want``; the perf_counter of that answer.
    :class:`TimeoutError` past ``deadline`` (a perf_counter)."""
    while True:
        if status(port, ROUTE, headers)[0] == want:
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"port {port} did not answer {want} in time")


def until_all(
    pool: ThreadPoolExecutor, ports: list[int], want: int, headers: dict[str, str], bound: float
) -> float:
    """Poll every port at once (a thread each) until each has answered ``want``; the
    perf_counter of the last such answer. :class:`TimeoutError` after ``bound`` seconds."""
    deadline = time.perf_counter() + bound
    futures = [pool.submit(first_answer, port, want, headers, deadline) for port in ports]
    return max(future.result() for future in futures)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank: a measured value, never an interpolation
    (so a timed-out trial, counted as infinite, stays infinite)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def run(workdir: Path, *, trials: int) -> dict[str, Any]:
    stack = stack_tools()
    redis_port = stack.free_port()
    system = stack.Stack(workdir=workdir, redis_url=f"redis://127.0.0.1:{redis_port}/0", workers=1)
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        system.others.append(stack.start_redis_server(redis_port, workdir))
        system.start()  # init-db, seed-demo, the IdP, billing_api (one worker)
        second = stack.free_port()
        system.others.insert(
            0,
            system.gunicorn(
                "billing_api-2", "example_service:create_app()", second, system.service_env()
            ),
        )
        ports = [system.service_port, second]
        alice = system.token(USER)
        user_id = jwt.decode(alice, options={"verify_signature": False})["sub"]
        headers = {"Authorization": f"Bearer {alice}"}
        until_all(
            pool, ports, 200, headers, 30
        )  # first requests: each worker starts its subscriber
        for port in ports:
            stack.wait_until(
                lambda p=port: json.loads(status(p, "/healthz", {})[1])["subscriber"] == "ok",
                15,
                f"the subscriber of the worker on port {port}",
            )
        roles_path = f"/api/users/{user_id}/roles/billing_api"

        def trial(revoked: list[str]) -> tuple[float, float]:
            """(seconds until the last worker denied, the IdP's answer time); granted again."""
            sent = time.perf_counter()
            system.admin("PUT", roles_path, {"roles": revoked}).raise_for_status()
            answered = time.perf_counter()
            try:
                denied = until_all(pool, ports, 403, headers, TRIAL_BOUND) - answered
            except TimeoutError:
                denied = math.inf
            system.admin("PUT", roles_path, {"roles": ["admin"]}).raise_for_status()
            until_all(pool, ports, 200, headers, 10)
            return denied, answered - sent

        timings: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
        for _ in range(trials):
            for name, (_, revoked) in VARIANTS.items():
                timings[name].append(trial(revoked))
    except stack.StackError as exc:
        raise RuntimeError(f"{exc}\n{system.logs(40)}") from exc
    finally:
        pool.shutdown(wait=True)
        system.stop()
    variants = {}
    for name, (label, revoked) in VARIANTS.items():
        latencies = [denied for denied, _ in timings[name]]
        answers = [answer for _, answer in timings[name]]
        variants[name] = {
            "label": label,
            "revoked_to": revoked,
            "timeouts": sum(math.isinf(x) for x in latencies),
            "p50_ms": percentile(latencies, 50) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3,
            "max_ms": max(latencies) * 1e3,
            "idp_answer_p50_ms": percentile(answers, 50) * 1e3,
        }
    return {"trials": trials, "workers": len(ports), "variants": variants}

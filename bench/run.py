"""Benchmarks: ratios against baselines measured in the same run (absolute numbers drift).

    make bench          # or: .venv/bin/python bench/run.py [--quick]

1. Lookup cost: our L1 hit and L2 hit against a bare ``cachetools.TTLCache`` hit and against the
   original design's Redis ``GET`` + ``json.loads`` per lookup.
2. Route throughput through Flask's WSGI stack (test client, one process), relative to the same
   route with no authorization: a role check from an in-process dict, the original design (one
   Redis GET per request), and flask-rbac-abac (JWT identity + L1).

Needs the Redis at RBAC_ABAC_REDIS_URL (default redis://127.0.0.1:6379/0); keys go under a
prefix of their own and are deleted afterwards.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt
import redis
from cachetools import TTLCache
from flask import Flask, abort, jsonify, request
from werkzeug.test import EnvironBuilder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask_rbac_abac import RBACABAC, RedisAttributeClient, UserAttributes, requires_role

REDIS_URL = os.environ.get("RBAC_ABAC_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "bench-secret-" + "x" * 32
PREFIX = "bench" + uuid.uuid4().hex[:8]
ATTRS = UserAttributes(
    user_id=1,
    service_name="billing_api",
    roles=["admin", "accountant"],
    permissions=["invoice:read", "invoice:write", "report:read"],
    attributes={"department": "finance", "clearance": 5, "region": "eu", "team": "ledger"},
    version=3,
)


def per_call(fn: Callable[[], object], n: int, runs: int) -> float:
    """Median seconds per call over ``runs`` runs of ``n`` calls."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - started) / n)
    return statistics.median(samples)


def _start_response(status: str, headers: list[tuple[str, str]]) -> None:
    assert status.startswith("200"), status


def lookups(r: redis.Redis, n: int, runs: int) -> None:
    ttl_cache: TTLCache[int, UserAttributes] = TTLCache(10000, 60)
    ttl_cache[1] = ATTRS
    client = RedisAttributeClient(
        REDIS_URL, service_name="billing_api", key_prefix=PREFIX, invalidation=False
    )
    client.set_user_attributes(ATTRS)
    raw_key = client.key(1)
    l2_only = RedisAttributeClient(
        REDIS_URL, service_name="billing_api", key_prefix=PREFIX, invalidation=False
    )

    def l2_hit() -> object:
        l2_only.local.clear()
        return l2_only.get_user_attributes(1)

    results = {
        "cachetools.TTLCache hit (baseline)": per_call(lambda: ttl_cache[1], n * 10, runs),
        "flask-rbac-abac L1 hit": per_call(lambda: client.get_user_attributes(1), n * 10, runs),
        "Redis GET + json.loads (original design)": per_call(
            lambda: json.loads(r.get(raw_key)), n, runs
        ),
        "flask-rbac-abac L2 hit (GET + validated decode)": per_call(l2_hit, n, runs),
    }
    base = results["cachetools.TTLCache hit (baseline)"]
    print(f"\nlookup cost (median of {runs} runs)")
    print(f"{'operation':52} {'us/call':>10} {'x baseline':>11}")
    for name, seconds in results.items():
        print(f"{name:52} {seconds * 1e6:10.2f} {seconds / base:11.1f}")
    original = results["Redis GET + json.loads (original design)"]
    ours = results["flask-rbac-abac L1 hit"]
    print(f"L1 hit is {original / ours:.0f}x cheaper than the original per-request Redis GET")
    client.close()
    l2_only.close()


def routes(r: redis.Redis, n: int, runs: int) -> None:
    token = jwt.encode(
        {"sub": "1", "aud": "rbac-abac", "iss": "rbac-abac-idp", "exp": time.time() + 3600},
        SECRET,
        algorithm="HS256",
    )
    headers = {"Authorization": f"Bearer {token}"}
    r.set(f"{PREFIX}:original:1", json.dumps({"roles": ["admin"]}))
    roles_dict = {"1": {"admin"}}

    plain = Flask("plain")

    @plain.get("/r")
    def plain_route():
        return jsonify(ok=True)

    in_dict = Flask("dict")

    @in_dict.get("/r")
    def dict_route():
        if "admin" not in roles_dict.get(request.headers.get("X-User", ""), ()):
            abort(403)
        return jsonify(ok=True)

    original = Flask("original")

    @original.get("/r")
    def original_route():
        raw = r.get(f"{PREFIX}:original:{request.headers.get('X-User', '')}")
        if raw is None or "admin" not in json.loads(raw)["roles"]:
            abort(403)
        return jsonify(ok=True)

    ours = Flask("ours")
    ours.config.update(
        SERVICE_NAME="billing_api",
        RBAC_ABAC_JWT_SECRET=SECRET,
        RBAC_ABAC_REDIS_URL=REDIS_URL,
        RBAC_ABAC_KEY_PREFIX=PREFIX,
        RBAC_ABAC_INVALIDATION=False,
    )
    rbac = RBACABAC(ours)

    @ours.get("/r")
    @requires_role("admin")
    def ours_route():
        return jsonify(ok=True)

    with ours.app_context():
        rbac.client.set_user_attributes(ATTRS)

    cases = {
        "no authorization (baseline)": (plain, {}),
        "role check from an in-process dict": (in_dict, {"X-User": "1"}),
        "one Redis GET per request (original design)": (original, {"X-User": "1"}),
        "flask-rbac-abac (JWT + L1)": (ours, headers),
    }
    calls = {}
    for name, (app, hdrs) in cases.items():
        assert app.test_client().get("/r", headers=hdrs).status_code == 200, name
        environ = EnvironBuilder(path="/r", headers=hdrs).get_environ()
        calls[name] = lambda a=app, e=environ: b"".join(a.wsgi_app(dict(e), _start_response))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):  # interleaved, so drift hits every case alike
        for name, call in calls.items():
            samples[name].append(per_call(call, n, 1))
    results = {name: statistics.median(values) for name, values in samples.items()}
    base = results["no authorization (baseline)"]
    print(f"\nroute throughput through the WSGI stack (median of {runs} interleaved runs)")
    print(f"{'route':52} {'req/s':>10} {'ratio':>7}")
    for name, seconds in results.items():
        print(f"{name:52} {1 / seconds:10.0f} {base / seconds:7.2f}")
    with ours.app_context():
        rbac.client.close()


def main() -> int:
    quick = "--quick" in sys.argv
    n, runs = (500, 3) if quick else (3000, 5)
    r = redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        r.ping()
    except redis.RedisError as exc:
        print(f"Redis not reachable at {REDIS_URL}: {exc}")
        return 1
    try:
        lookups(r, n, runs)
        routes(r, n, runs)
    finally:
        keys = list(r.scan_iter(match=f"{PREFIX}:*"))
        if keys:
            r.delete(*keys)
    return 0


if __name__ == "__main__":
    sys.exit(main())

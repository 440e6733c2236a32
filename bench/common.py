"""What every part of ``make bench`` shares: the user, the token, the Redis keys, the timing.

Noise is handled the same way everywhere: the cases of one comparison run *alternately* in
rounds (the order reversed every other round, so neither case always goes first), a ratio is
taken within each round (both sides saw the same machine state) and the median over rounds is
reported.
"""

from __future__ import annotations

import gc
import importlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import jwt

from flask_rbac_abac import UserAttributes

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("RBAC_ABAC_REDIS_URL", "redis://127.0.0.1:6379/0")
#: The HS256 secret the benchmark's tokens are signed with (made up; 32+ bytes as required).
SECRET = "bench-secret-" + "x" * 32
SERVICE = "billing_api"
AUDIENCE = "rbac-abac"
ISSUER = "rbac-abac-idp"
USER_ID = 1
ATTRS = UserAttributes(
    user_id=USER_ID,
    service_name=SERVICE,
    roles=["admin", "accountant"],
    permissions=["invoice:read", "invoice:write", "report:read"],
    attributes={"department": "finance", "clearance": 5, "region": "eu", "team": "ledger"},
    version=3,
)


def stack_tools() -> ModuleType:
    """``scripts/stack.py`` (not a package), which the demo and the e2e tests use too: free
    ports, processes in process groups of their own (stopped whole), waiting for readiness."""
    scripts = str(ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    return importlib.import_module("stack")


def new_prefix() -> str:
    """A Redis key prefix of this run's own (deleted at the end)."""
    return "bench" + uuid.uuid4().hex[:8]


def token(subject: int = USER_ID, *, jti: str = "") -> str:
    """A valid bearer token for ``subject``, for an hour; ``jti`` makes it unique."""
    claims: dict[str, object] = {
        "sub": str(subject),
        "aud": AUDIENCE,
        "iss": ISSUER,
        "exp": int(time.time()) + 3600,
    }
    if jti:
        claims["jti"] = jti
    return jwt.encode(claims, SECRET, algorithm="HS256")


def by_hand_key(prefix: str, user_id: int | str) -> str:
    """The key the hand-written "one Redis GET per request" baseline reads."""
    return f"{prefix}:byhand:{user_id}"


def seconds_per_call(fn: Callable[[], object], n: int) -> float:
    """Seconds per call of ``n`` calls of ``fn`` in a row."""
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n


def calls_for(fn: Callable[[], object], seconds: float) -> int:
    """How many calls of ``fn`` take about ``seconds`` (at least 20), timed on a short run."""
    n = 10
    while True:
        took = seconds_per_call(fn, n) * n
        if took >= 0.02 or n >= 100_000:
            return max(20, int(seconds * n / took))
        n *= 10


@dataclass
class Alternated:
    """Per-case seconds per call, one sample per round, and the calls each sample made."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def median(self, case: str) -> float:
        return statistics.median(self.samples[case])

    def ratio(self, case: str, baseline: str) -> float:
        """Median over rounds of ``baseline time / case time`` within each round: the case's
        throughput relative to the baseline's (1.0 = as fast)."""
        pairs = zip(self.samples[baseline], self.samples[case], strict=True)
        return statistics.median(base / this for base, this in pairs)


def alternate(
    calls: Mapping[str, Callable[[], object]], *, seconds: float, rounds: int
) -> Alternated:
    """Run every case for about ``seconds`` per round (its number of calls fixed beforehand),
    the cases alternating, for ``rounds`` rounds."""
    result = Alternated(
        {name: [] for name in calls}, {name: calls_for(fn, seconds) for name, fn in calls.items()}
    )
    names = list(calls)
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            gc.collect()
            result.samples[name].append(seconds_per_call(calls[name], result.calls[name]))
    return result

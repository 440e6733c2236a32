"""Over HTTP: gunicorn (2 sync workers) per case, loaded by wrk; requests per second.

Every case's server runs for the whole section (an idle one costs nothing), on a free port of
127.0.0.1; the cases take turns in rounds, each a wrk run of fixed length after a warm-up that
verified the token and filled L1 in both workers. flask-rbac-abac runs as in production, its
invalidation subscriber included. Every wrk run is bounded in time, and every
server is stopped at the end (its whole process group), also on error.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

import requests

from bench.common import REDIS_URL, stack_tools, token

CASES = {
    "bare": "bare view (baseline)",
    "protected": "protected (requires_role), L1 hit",
    "byhand": "one Redis GET per request, by hand",
}
WORKERS = 2
CONNECTIONS = 8
_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")


def wrk(binary: str, url: str, header: str, seconds: float) -> float:
    """Requests per second of one wrk run; :class:`RuntimeError` on any non-2xx answer."""
    argv = [
        binary,
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{seconds:g}s",
        "--timeout",
        "2s",
        "-H",
        f"Authorization: {header}",
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 15, check=False)
    rps = _RPS.search(done.stdout)
    if done.returncode != 0 or rps is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    bad = _NON_2XX.search(done.stdout)
    if bad is not None and int(bad.group(1)):
        raise RuntimeError(f"{url}: {bad.group(1)} answers were not 2xx:\n{done.stdout}")
    return float(rps.group(1))


def run(prefix: str, workdir: Path, *, seconds: float, rounds: int) -> dict[str, Any]:
    binary = shutil.which("wrk")
    if binary is None:
        return {"skipped": "wrk is not installed (Debian's wrk; `make bench` installs it as root)"}
    stack = stack_tools()
    header = f"Bearer {token()}"
    env = stack.clean_env({"RBAC_ABAC_REDIS_URL": REDIS_URL, "BENCH_KEY_PREFIX": prefix})
    servers: dict[str, Any] = {}
    urls: dict[str, str] = {}
    try:
        for case in CASES:
            port = stack.free_port()
            argv = [
                stack.PY,
                "-m",
                "gunicorn",
                "--workers",
                str(WORKERS),
                "--bind",
                f"127.0.0.1:{port}",
                "--graceful-timeout",
                "3",
                "--timeout",
                "30",
                "--error-logfile",
                "-",
                f"bench.apps:create_app({case!r})",
            ]
            servers[case] = stack.Proc(f"http-{case}", argv, env, workdir / f"{case}.log").start()
            urls[case] = f"http://127.0.0.1:{port}/r"
        for case, url in urls.items():

            def answers(url: str = url) -> bool:
                return requests.get(url, headers={"Authorization": header}, timeout=2).ok

            stack.wait_until(answers, 30, f"gunicorn for {case}", servers[case])
            wrk(binary, url, header, 1)  # warm-up: each worker verified the token, filled L1
        samples: dict[str, list[float]] = {case: [] for case in CASES}
        names = list(CASES)
        for index in range(rounds):
            for case in names if index % 2 == 0 else names[::-1]:
                samples[case].append(wrk(binary, urls[case], header, seconds))
    finally:
        for proc in servers.values():
            proc.stop()
    cases = {
        case: {
            "label": label,
            "requests_per_second": statistics.median(samples[case]),
            "ratio": statistics.median(
                this / base for this, base in zip(samples[case], samples["bare"], strict=True)
            ),
            "samples": samples[case],
        }
        for case, label in CASES.items()
    }
    return {
        "workers": WORKERS,
        "connections": CONNECTIONS,
        "seconds": seconds,
        "rounds": rounds,
        "cases": cases,
    }

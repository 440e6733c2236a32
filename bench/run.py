"""``make bench``: what authorization costs, as ratios against baselines measured in the same run.

    make bench                      # or: .venv/bin/python -m bench.run [--quick]
    make bench BENCH_ARGS=--quick   # fewer rounds, for iterating
    BENCH_STRICT=1 make bench       # exit 1 when a goal fails (else the report always exits 0)

1. In-process (:mod:`bench.inprocess`): bare view, extension + open route, protected with an L1
   hit and with an L2 hit, one Redis GET per request by hand, pycasbin, Flask-Principal; and
   async views (bare, open, protected).
2. Over HTTP (:mod:`bench.over_http`): gunicorn with 2 workers, loaded by wrk.
3. Micro (:mod:`bench.micro`): token verification, L1 and L2 hits, rule evaluation, in ns/op.
4. Invalidation (:mod:`bench.invalidation`): the real IdP and two service workers.
5. Memory (:mod:`bench.memory`): bytes per L1 entry, RSS at 10k and 100k entries, the bound.

Prints the tables and the goals (PASS/FAIL), writes ``bench/results.json`` and
``bench/results.png``, and after a full run ``BENCHMARKS.md``. Needs the Redis at
``RBAC_ABAC_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``; keys under a prefix of this run's
own, deleted at the end), ``redis-server`` (the invalidation section starts its own) and wrk.
A section that fails is reported as an error (exit 1); the others still run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench import apps, inprocess, invalidation, memory, micro, over_http, report
from bench.common import REDIS_URL, new_prefix

#: Sizes of a full run (about 2-3 minutes on 2 cores) and of ``--quick``. ``seconds``: of calls
#: per case and round, in-process and micro (short rounds, many of them: a case and its baseline
#: run close together, so the machine's drift cancels in their ratio); ``http_seconds``: per
#: wrk run; ``trials``: per invalidation variant; ``large``: L1 entries of the larger RSS figure.
FULL = {"seconds": 0.03, "rounds": 75, "micro_seconds": 0.1, "micro_rounds": 7,
        "http_seconds": 2.0, "http_rounds": 9, "trials": 100, "large": 100_000}  # fmt: skip
QUICK = {"seconds": 0.04, "rounds": 5, "micro_seconds": 0.03, "micro_rounds": 3,
         "http_seconds": 1.0, "http_rounds": 2, "trials": 20, "large": 20_000}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for iterating")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    strict = os.environ.get("BENCH_STRICT", "") not in ("", "0")

    r = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        r.ping()
    except redis.RedisError as exc:
        print(f"Redis not reachable at {REDIS_URL}: {exc}")
        return 1
    prefix = new_prefix()
    started = time.monotonic()
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "machine": report.machine(),
        "errors": {},
    }

    def section(name: str, title: str, fn: Callable[[], dict[str, Any]]) -> None:
        print(f"[{time.monotonic() - started:5.0f} s] {title} ...", flush=True)
        try:
            results[name] = fn()
        except Exception as exc:  # a report: say what failed, measure the rest
            traceback.print_exc()
            results["errors"][name] = f"{type(exc).__name__}: {exc}".splitlines()[0]

    try:
        apps.seed(prefix)
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            workdir = Path(tmp)
            section(
                "inprocess",
                "in-process (WSGI direct)",
                lambda: inprocess.run(prefix, seconds=size["seconds"], rounds=size["rounds"]),
            )
            section(
                "http",
                "over HTTP (gunicorn + wrk)",
                lambda: over_http.run(
                    prefix, workdir, seconds=size["http_seconds"], rounds=size["http_rounds"]
                ),
            )
            section(
                "micro",
                "micro",
                lambda: micro.run(
                    prefix, seconds=size["micro_seconds"], rounds=size["micro_rounds"]
                ),
            )
            (workdir / "idp").mkdir()
            section(
                "invalidation",
                "invalidation (IdP + 2 service workers)",
                lambda: invalidation.run(workdir / "idp", trials=size["trials"]),
            )
            section("memory", "memory (L1)", lambda: memory.run(large=size["large"]))
    finally:
        keys = list(r.scan_iter(match=f"{prefix}:*"))
        if keys:
            r.delete(*keys)
        r.close()

    if "skipped" in results.get("http", {}):
        print(f"over HTTP skipped: {results['http']['skipped']}")
    results["elapsed_s"] = time.monotonic() - started
    results["load_average_end"] = os.getloadavg()[0]
    results["goals"] = report.judge(results)
    for table in report.tables(results):
        print(table.text())
    report.write_json(results)
    report.write_chart(results)
    written = [report.RESULTS_JSON, report.RESULTS_PNG]
    if not args.quick and not results["errors"]:
        report.write_markdown(results)
        written.append(report.BENCHMARKS_MD)
    print(
        f"\nwrote {', '.join(str(p.relative_to(report.ROOT)) for p in written)} "
        f"in {results['elapsed_s']:.0f} s"
    )
    if results["errors"]:
        return 1
    failed = [g["label"] for g in results["goals"] if g["status"] != "PASS"]
    if failed and strict:
        print(f"BENCH_STRICT: {len(failed)} goal(s) not met: {'; '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

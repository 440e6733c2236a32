"""Memory of L1: bytes per entry, the process's RSS with 10k and 100k entries, and the bound.

Each figure comes from a fresh Python process (``python -m bench.memory``), so nothing else of
the run is in its RSS. Entries are what L1 holds after an L2 hit: a :class:`UserAttributes`
decoded from the benchmark user's JSON (four attributes, two roles, three permissions), one per
user id, put into the client's L1 (``client.local``) directly: filling 100k entries through
Redis would only add minutes. Bytes per entry are measured with ``tracemalloc`` (everything
allocated while filling, divided by the entries); RSS with psutil, before and after filling.

The bound: an L1 of ``maxsize`` entries is filled with half as many more users, and must hold
at most ``maxsize``.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tracemalloc
from typing import Any

import psutil

from bench.common import ATTRS, REDIS_URL, ROOT, SERVICE, new_prefix
from flask_rbac_abac import RedisAttributeClient, UserAttributes


def fill(entries: int, maxsize: int, *, trace: bool) -> dict[str, Any]:
    """Put ``entries`` users into an L1 of ``maxsize``; what it cost."""
    client = RedisAttributeClient(
        REDIS_URL,
        service_name=SERVICE,
        key_prefix=new_prefix(),
        invalidation=False,
        local_cache_size=maxsize,
    )
    local = client.local
    data = ATTRS.to_dict()
    gc.collect()
    process = psutil.Process()
    rss_before = process.memory_info().rss
    if trace:
        tracemalloc.start()
    for user_id in range(1, entries + 1):
        data["user_id"] = user_id
        attrs = UserAttributes.from_json(json.dumps(data))
        key = (SERVICE, user_id)
        local.put(key, attrs, local.ticket(key))
    traced = tracemalloc.get_traced_memory()[0] if trace else 0
    tracemalloc.stop()
    gc.collect()
    result = {
        "entries": entries,
        "maxsize": maxsize,
        "len": len(local),
        "rss_before": rss_before,
        "rss_after": process.memory_info().rss,
        "traced_bytes": traced,
    }
    client.close()
    return result


def measure(entries: int, maxsize: int, *, trace: bool = False) -> dict[str, Any]:
    """:func:`fill` in a fresh process."""
    argv = [sys.executable, "-m", "bench.memory", str(entries), str(maxsize)]
    done = subprocess.run(
        [*argv, "--trace"] if trace else argv,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return dict(json.loads(done.stdout))


def run(*, large: int = 100_000) -> dict[str, Any]:
    small = 10_000
    traced = measure(small, small, trace=True)
    rss = {n: measure(n, n) for n in (small, large)}
    bound = measure(small + small // 2, small)
    return {
        "bytes_per_entry": traced["traced_bytes"] / small,
        "rss": {
            str(n): {
                "entries": r["len"],
                "rss_mib": r["rss_after"] / 2**20,
                "growth_mib": (r["rss_after"] - r["rss_before"]) / 2**20,
            }
            for n, r in rss.items()
        },
        "bound": {"maxsize": bound["maxsize"], "filled": bound["entries"], "len": bound["len"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entries", type=int)
    parser.add_argument("maxsize", type=int)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    print(json.dumps(fill(args.entries, args.maxsize, trace=args.trace)))


if __name__ == "__main__":
    main()

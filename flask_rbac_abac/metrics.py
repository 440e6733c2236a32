"""Counters and lookup timings, read as a dict (``stats()``) or as Prometheus text."""

from __future__ import annotations

import threading
from typing import Any

COUNTERS = (
    "l1_hits",
    "l1_misses",
    "l2_hits",
    "l2_misses",
    "auto_refreshes",
    "manual_refreshes",
    "refresh_waits",
    "idp_errors",
    "idp_not_found",
    "unknown_hits",
    "redis_errors",
    "decode_errors",
    "stale_served",
    "breaker_rejections",
    "invalidations",
    "allowed",
    "denied",
)


class Stats:
    """Thread-safe counters plus a running total of lookup time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._lookups = 0
        self._lookup_seconds = 0.0

    def incr(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def observe_lookup(self, seconds: float) -> None:
        with self._lock:
            self._lookups += 1
            self._lookup_seconds += seconds

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            lookups, total = self._lookups, self._lookup_seconds
        # Lookups that went past L1 are timed; L1 hits do no I/O and are only counted.
        out["timed_lookups"] = lookups
        out["lookup_seconds_total"] = total
        out["lookup_avg_ms"] = (total / lookups * 1000.0) if lookups else 0.0
        hits = out["l1_hits"] + out["l2_hits"]
        total_lookups = out["l1_hits"] + out["l1_misses"]
        out["lookups"] = total_lookups
        out["hit_ratio"] = hits / total_lookups if total_lookups else 0.0
        return out


def prometheus_text(snapshot: dict[str, Any], service_name: str) -> str:
    """Render ``snapshot`` in the Prometheus text format (needs ``prometheus_client``)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class _Collector:
        def collect(self) -> Any:
            for name in COUNTERS:
                family = CounterMetricFamily(
                    f"rbac_abac_{name}",
                    f"flask-rbac-abac {name.replace('_', ' ')}",
                    labels=["service"],
                )
                family.add_metric([service_name], snapshot[name])
                yield family
            lookups = CounterMetricFamily(
                "rbac_abac_lookup_seconds", "time spent loading attributes", labels=["service"]
            )
            lookups.add_metric([service_name], snapshot["lookup_seconds_total"])
            yield lookups
            breaker = GaugeMetricFamily(
                "rbac_abac_breaker_open",
                "1 while the IdP circuit breaker is open",
                labels=["service"],
            )
            breaker.add_metric([service_name], 1.0 if snapshot.get("breaker_open") else 0.0)
            yield breaker

    registry = CollectorRegistry()
    registry.register(_Collector())
    return generate_latest(registry).decode()

"""Counters and lookup timings: a dict for ``stats()``, and Prometheus metrics when asked for.

:class:`Stats` is the one seam the client and the extension count through (``incr``,
``observe_lookup``, ``decision``, ``breaker``). It always keeps this process's totals for
``stats()``; with ``RBAC_ABAC_METRICS_ENDPOINT`` set it also forwards each event to a
:class:`PrometheusMetrics`, which the endpoint serves.

Several gunicorn workers: with ``PROMETHEUS_MULTIPROC_DIR`` in the environment *before the
process starts*, ``prometheus_client`` writes every worker's values to files in that directory
and a scrape of any worker answers for all of them (summed; the breaker gauge is the maximum of
the live workers). Without it, each worker has its own registry and a scrape sees the one worker
that answered.

No label ever carries a user id or a token: labels are the service name, the decision's result
(``allow``/``deny``/``error``) and its reason code, a short machine word.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .errors import ConfigurationError

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.values import MutexValue
except ImportError:  # the optional `prometheus` extra is not installed
    prometheus_client = None  # type: ignore[assignment]

#: ``prometheus_client`` is installed (the ``prometheus`` extra).
AVAILABLE = prometheus_client is not None

COUNTERS = (
    "l1_hits",
    "l1_misses",
    "l2_hits",
    "l2_misses",
    "auto_refreshes",
    "manual_refreshes",
    "refresh_ahead",
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
#: Counted in ``stats()`` only: Prometheus has them as ``rbac_abac_decisions_total{result}``.
DECISION_COUNTERS = frozenset({"allowed", "denied"})
#: Every metric is named ``rbac_abac_...``.
PREFIX = "rbac_abac_"
#: Seconds: an L2 hit is well under a millisecond, an IdP call can take the read timeout.
LOOKUP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: A reason code that does not look like one is counted as ``other`` (bounded label values).
_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: The environment variable of ``prometheus_client``'s multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ENDPOINT_KEY = "RBAC_ABAC_METRICS_ENDPOINT"


def derived(out: dict[str, Any], lookups: float, seconds: float) -> dict[str, Any]:
    """Add the figures computed from the counters (ratios and averages) to ``out``."""
    # Lookups that went past L1 are timed; L1 hits do no I/O and are only counted.
    out["timed_lookups"] = lookups
    out["lookup_seconds_total"] = seconds
    out["lookup_avg_ms"] = (seconds / lookups * 1000.0) if lookups else 0.0
    hits = out["l1_hits"] + out["l2_hits"]
    total_lookups = out["l1_hits"] + out["l1_misses"]
    out["lookups"] = total_lookups
    out["hit_ratio"] = hits / total_lookups if total_lookups else 0.0
    return out


#: Where each counter sits in a thread's tally (:class:`Stats`).
_INDEX = {name: i for i, name in enumerate(COUNTERS)}
_DENIED = _INDEX["denied"]


#: The counters of every protected request (an L1 hit, an allow): :class:`Stats` keeps each in
#: an ``itertools.count``, whose ``__next__`` the request path calls directly (one C call,
#: atomic, no lock).
HOT_COUNTERS = ("l1_hits", "allowed")


def _value(counter: itertools.count[int]) -> int:
    """How far ``counter`` has counted, without advancing it (its repr is ``count(N)``)."""
    return int(repr(counter)[len("count(") : -1])


class Stats:
    """Thread-safe counters plus a running total of lookup time, without a lock on the way.

    The two counters of every request (:data:`HOT_COUNTERS`) are ``itertools.count`` objects:
    :attr:`l1_hit` and :attr:`allow` count one each, :attr:`hot_allow` both at once (a third
    counter, added to both). Every other count goes to a tally of the
    counting thread's own (a list only that thread writes), so it is one list update, exact
    under any number of threads; :meth:`snapshot` sums them. The tallies of threads that have
    ended are folded into one total when a new thread starts counting, so their number stays
    that of the live threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # taken by a thread's first count, and by snapshot()
        self._local = threading.local()
        self._tallies: list[tuple[threading.Thread, list[float]]] = []
        #: The counters, then lookups and lookup seconds, of the threads that have ended.
        self._ended: list[float] = [0] * (len(COUNTERS) + 2)
        self._hot = {name: itertools.count() for name in HOT_COUNTERS}
        self._hot_allows = itertools.count()  # each one L1 hit and one allow (the hot path's)
        self._exporter: PrometheusMetrics | None = None
        self.exporter = None

    @property
    def exporter(self) -> PrometheusMetrics | None:
        """The app's :class:`PrometheusMetrics`, or ``None`` (no endpoint configured)."""
        return self._exporter

    @exporter.setter
    def exporter(self, exporter: PrometheusMetrics | None) -> None:
        self._exporter = exporter
        #: Count one L1 hit / one allowed decision: without an exporter, the counter's own
        #: ``__next__``; with one, the Prometheus metric too.
        self.l1_hit: Callable[[], object] = self._hot["l1_hits"].__next__
        self.allow: Callable[[], object] = self._hot["allowed"].__next__
        #: Count one L1 hit and one allowed decision at once (the hot path's allow).
        self.hot_allow: Callable[[], object] = self._hot_allows.__next__
        if exporter is not None:
            self.l1_hit = functools.partial(self.incr, "l1_hits")
            self.allow = functools.partial(self.decision, "allow", "allowed")
            self.hot_allow = self._exported_hot_allow

    def _exported_hot_allow(self) -> None:
        self.l1_hit()
        self.allow()

    def _tally(self) -> list[float]:
        """This thread's tally (created, and the ended threads' folded, on its first count)."""
        try:
            tally: list[float] = self._local.tally
        except AttributeError:
            tally = self._local.tally = [0] * (len(COUNTERS) + 2)
            with self._lock:
                self._fold_ended()
                self._tallies.append((threading.current_thread(), tally))
        return tally

    def _fold_ended(self) -> None:
        live = []
        for thread, tally in self._tallies:
            if thread.is_alive():
                live.append((thread, tally))
            else:
                self._ended = [a + b for a, b in zip(self._ended, tally, strict=True)]
        self._tallies = live

    def incr(self, name: str, amount: int = 1) -> None:
        hot = self._hot.get(name)
        if hot is not None:
            for _ in range(amount):
                next(hot)
        else:
            self._count(_INDEX[name], amount)
        if self._exporter is not None:
            self._exporter.incr(name, amount)

    def _count(self, index: int, amount: int) -> None:
        try:
            self._local.tally[index] += amount
        except AttributeError:  # this thread's first count
            self._tally()[index] += amount

    def observe_lookup(self, seconds: float) -> None:
        tally = self._tally()
        tally[-2] += 1
        tally[-1] += seconds
        if self._exporter is not None:
            self._exporter.lookup.observe(seconds)

    def decision(self, result: str, code: str) -> None:
        """Count a decision: ``result`` (``allow``, ``deny``, ``error``) and its reason ``code``."""
        if result == "allow":
            next(self._hot["allowed"])
        else:
            self._count(_DENIED, 1)
        if self._exporter is not None:
            self._exporter.decision(result, code)

    def breaker(self, state: str) -> None:
        """Record the IdP circuit breaker's state (``closed``, ``open`` or ``half-open``)."""
        if self.exporter is not None:
            self.exporter.breaker(state)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            totals = list(self._ended)
            for _, tally in self._tallies:
                totals = [a + b for a, b in zip(totals, tally, strict=True)]
        out: dict[str, Any] = {name: int(totals[i]) for name, i in _INDEX.items()}
        for name, counter in self._hot.items():
            out[name] += _value(counter)
        hot_allows = _value(self._hot_allows)
        out["l1_hits"] += hot_allows
        out["allowed"] += hot_allows
        return derived(out, int(totals[-2]), totals[-1])


def require_prometheus(key: str) -> None:
    """Raise :class:`ConfigurationError` naming ``key`` when ``prometheus_client`` is missing."""
    if not AVAILABLE:
        raise ConfigurationError(
            f"{key} is set but prometheus_client is not installed: "
            'pip install "flask-rbac-abac[prometheus]"'
        )


def multiprocess_dir(key: str) -> str | None:
    """The multiprocess directory, checked; ``None`` in single-process mode.

    :raises ConfigurationError: the directory does not exist, or the variable was set after
        ``prometheus_client`` was imported (its values would not reach the directory).
    """
    path = os.environ.get(MULTIPROC_ENV) or None
    single = prometheus_client.values.ValueClass is MutexValue
    if path is None and not single:
        raise ConfigurationError(f"{key}: {MULTIPROC_ENV} was unset after startup")
    if path is None:
        return None
    if single:
        raise ConfigurationError(
            f"{key}: {MULTIPROC_ENV} must be in the process's environment before "
            "prometheus_client is imported (set it where gunicorn is started)"
        )
    if not os.path.isdir(path):
        raise ConfigurationError(f"{key}: {MULTIPROC_ENV}={path!r} is not a directory")
    return path


def exposition(own: Any, live: Iterable[Any] = ()) -> bytes:
    """The Prometheus text of ``own`` (a registry) plus ``live`` collectors, read now.

    In multiprocess mode every worker's values come from the files instead of ``own``.
    """
    registry = CollectorRegistry()
    source = own
    if os.environ.get(MULTIPROC_ENV):
        source = MultiProcessCollector(None)  # type: ignore[no-untyped-call]
    for collector in (source, *live):
        registry.register(collector)
    body: bytes = prometheus_client.generate_latest(registry)
    return body


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PrometheusMetrics:
    """One app's Prometheus metrics, in a registry of its own (two apps stay apart).

    :param service_name: the ``service`` label of every metric.
    :raises ConfigurationError: ``prometheus_client`` is missing or multiprocess mode is
        misconfigured (the message names ``RBAC_ABAC_METRICS_ENDPOINT``).
    """

    def __init__(self, service_name: str) -> None:
        require_prometheus(ENDPOINT_KEY)
        self.multiprocess = multiprocess_dir(ENDPOINT_KEY) is not None
        self.registry = CollectorRegistry()
        self.service_name = service_name
        self._counters = {
            name: Counter(
                PREFIX + name,
                f"flask-rbac-abac: {name.replace('_', ' ')}",
                ["service"],
                registry=self.registry,
            ).labels(service_name)
            for name in COUNTERS
            if name not in DECISION_COUNTERS
        }
        self._decisions = Counter(
            PREFIX + "decisions",
            "authorization decisions by result (allow, deny, error) and reason code",
            ["service", "result", "reason"],
            registry=self.registry,
        )
        self.lookup = Histogram(
            PREFIX + "lookup_seconds",
            "time to load attributes past L1 (L2, or a refresh from the IdP)",
            ["service"],
            buckets=LOOKUP_BUCKETS,
            registry=self.registry,
        ).labels(service_name)
        self._breaker = Gauge(
            PREFIX + "breaker_open",
            "1 while the IdP circuit breaker refuses calls (open or half-open), else 0",
            ["service"],
            registry=self.registry,
            multiprocess_mode="livemax",
        ).labels(service_name)
        self._breaker.set(0)

    def incr(self, name: str, amount: int = 1) -> None:
        counter = self._counters.get(name)
        if counter is not None:
            counter.inc(amount)

    def decision(self, result: str, code: str) -> None:
        reason = code if _REASON.fullmatch(code) else "other"
        self._decisions.labels(self.service_name, result, reason).inc()

    def breaker(self, state: str) -> None:
        self._breaker.set(0 if state == "closed" else 1)

    def render(self) -> bytes:
        """The text a scrape gets: this process's values, or every worker's (multiprocess)."""
        return exposition(self.registry)


def exported_names(registry: Any) -> set[str]:
    """Every series name ``registry``'s metric families produce (``_total``, ``_bucket``, ...)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
    }
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def _samples(text: str, service: str) -> Iterator[tuple[str, Mapping[str, str], float]]:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("service", service) == service:
                yield sample.name, sample.labels, sample.value


def parse_stats(text: str, service: str) -> dict[str, Any]:
    """The ``stats()`` dict rebuilt from a scrape of ``service``'s metrics endpoint.

    :raises ValueError: ``text`` is not the Prometheus text format.
    """
    out: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
    decisions: dict[str, dict[str, int]] = {}
    lookups = seconds = 0.0
    breaker = 0.0
    for name, labels, value in _samples(text, service):
        base = name.removeprefix(PREFIX)
        if base.endswith("_total") and base[: -len("_total")] in out:
            out[base[: -len("_total")]] += int(value)
        elif base == "decisions_total":
            by_reason = decisions.setdefault(labels.get("result", "?"), {})
            by_reason[labels.get("reason", "?")] = int(value)
        elif base == "lookup_seconds_count":
            lookups += value
        elif base == "lookup_seconds_sum":
            seconds += value
        elif base == "breaker_open":
            breaker = max(breaker, value)
    out["allowed"] = sum(decisions.get("allow", {}).values())
    out["denied"] = sum(sum(d.values()) for r, d in decisions.items() if r != "allow")
    out["decisions"] = decisions
    out["breaker_open"] = breaker >= 1
    return derived(out, int(lookups), seconds)

"""The IdP's Prometheus metrics, served at ``GET /metrics`` when ``IDP_METRICS_ENABLED`` is on.

What is counted, and where:

- refresh and token requests by result, and rate-limit refusals (429 on any endpoint): from
  the response status, in an ``after_request`` hook, so the views stay as they are;
- database latency: SQLAlchemy's ``before_cursor_execute``/``after_cursor_execute`` events on
  the app's engines;
- publishes (``cache.publish`` calls :func:`published`) and warmed keys (the warm-cache
  operation calls :func:`warmed`);
- the outbox backlog: read from the database at scrape time through the ``backlog`` function
  the factory passes (``idp_app.outbox.backlog`` when that module exists; nothing is reported
  until it does), and a failing read reports nothing rather than failing the scrape.

The endpoint answers anyone, like ``/healthz``: the values carry no user data (labels are
results and endpoint names). Expose it on a network only Prometheus reaches, or block
``/metrics`` at the reverse proxy. Under gunicorn set ``PROMETHEUS_MULTIPROC_DIR`` (see
``deploy/gunicorn.conf.py``) so a scrape sums every worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response, current_app, has_app_context, request
from sqlalchemy import event

from flask_rbac_abac.shared import (
    AVAILABLE,
    CONTENT_TYPE,
    exposition,
    multiprocess_dir,
    require_prometheus,
)

from .extensions import db

if AVAILABLE:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger("idp_app.metrics")

KEY = "IDP_METRICS_ENABLED"
#: Seconds: a primary-key read is sub-millisecond, a slow query is what the upper buckets catch.
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: The endpoints whose requests are counted by result.
REFRESH_ENDPOINT = "refresh.refresh_user_cache"
TOKEN_ENDPOINT = "token.issue_token"  # noqa: S105 - an endpoint name, not a secret


def result_of(status: int, success: str) -> str:
    """A bounded label for a response status: ``success`` for 2xx, else what went wrong."""
    if status < 300:
        return success
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "refused"
    if status == 404:
        return "not_found"
    if status < 500:
        return "bad_request"
    return "error"


class IdpMetrics:
    """One app's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.refresh_requests = Counter(
            "idp_refresh_requests",
            "POST /api/refresh-user-cache/ by result (ok, not_found, refused, bad_request, "
            "rate_limited, error)",
            ["result"],
            registry=self.registry,
        )
        self.token_requests = Counter(
            "idp_token_requests",
            "POST /api/token by result (issued, refused, bad_request, rate_limited, error)",
            ["result"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "idp_rate_limited",
            "requests refused with 429 by the rate limiter, by endpoint",
            ["endpoint"],
            registry=self.registry,
        )
        self.db_query = Histogram(
            "idp_db_query_seconds",
            "time of one database statement",
            buckets=DB_BUCKETS,
            registry=self.registry,
        )
        self.publishes = Counter(
            "idp_publishes",
            "invalidation messages published to Redis, by result (ok, failed)",
            ["result"],
            registry=self.registry,
        )
        self.warmed_keys = Counter(
            "idp_warmed_keys",
            "cache entries written by cache warming",
            registry=self.registry,
        )

    def count_response(self, endpoint: str | None, status: int) -> None:
        if endpoint == REFRESH_ENDPOINT:
            self.refresh_requests.labels(result_of(status, "ok")).inc()
        elif endpoint == TOKEN_ENDPOINT:
            self.token_requests.labels(result_of(status, "issued")).inc()
        if status == 429:
            self.rate_limited.labels(endpoint or "unknown").inc()


class OutboxCollector:
    """``idp_outbox_backlog`` and ``idp_outbox_oldest_age_seconds``, read at scrape time.

    :param backlog: ``idp_app.outbox.backlog``: ``(rows, oldest age)`` or an object with
        ``rows`` and ``oldest_age``; ``None`` reports nothing.
    """

    def __init__(self, backlog: Callable[[], Any] | None) -> None:
        self.backlog = backlog

    def collect(self) -> Iterator[Any]:
        found = _backlog(self.backlog)
        if found is None:
            return
        rows, oldest_age = found
        yield GaugeMetricFamily(
            "idp_outbox_backlog", "changes not yet delivered to Redis", value=rows
        )
        yield GaugeMetricFamily(
            "idp_outbox_oldest_age_seconds",
            "age of the oldest undelivered change (0 when none)",
            value=oldest_age or 0.0,
        )


def _backlog(read: Callable[[], Any] | None) -> tuple[int, float | None] | None:
    """``(rows, oldest age in seconds)`` from ``read()``, or ``None`` when unknown."""
    if read is None:
        return None
    try:
        found = read()
        if isinstance(found, tuple):
            rows, age = found
        else:
            rows, age = found.rows, found.oldest_age
        return int(rows), None if age is None else float(age)
    except Exception as exc:  # a scrape must answer even when the database does not
        db.session.rollback()
        logger.warning("outbox backlog unreadable: %s", type(exc).__name__)
        return None


def _metrics() -> IdpMetrics | None:
    if not has_app_context():
        return None
    found: IdpMetrics | None = current_app.extensions["idp_app"].get("metrics")
    return found


def refresh_counts() -> dict[str, float] | None:
    """This process's refresh requests so far by result; ``None`` when metrics are off."""
    metrics = _metrics()
    if metrics is None:
        return None
    counts: dict[str, float] = {}
    for family in metrics.refresh_requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["result"]] = sample.value
    return counts


def published(ok: bool) -> None:
    """Count one publish of an invalidation (no-op when metrics are off)."""
    metrics = _metrics()
    if metrics is not None:
        metrics.publishes.labels("ok" if ok else "failed").inc()


def warmed(count: int) -> None:
    """Count ``count`` cache entries written by warming (no-op when metrics are off)."""
    metrics = _metrics()
    if metrics is not None and count > 0:
        metrics.warmed_keys.inc(count)


def _time_statements(engine: Any, histogram: Any) -> None:
    def before(
        conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any
    ) -> None:
        conn.info.setdefault("idp_metrics_started", []).append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any) -> None:
        started = conn.info.get("idp_metrics_started")
        if started:
            histogram.observe(time.perf_counter() - started.pop())

    def failed(context: Any) -> None:  # a failed statement never reaches after_cursor_execute
        started = context.connection.info.get("idp_metrics_started") if context.connection else None
        if started:
            started.pop()

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "handle_error", failed)


def init_app(app: Flask, backlog: Callable[[], Any] | None = None) -> None:
    """Serve ``/metrics`` and count, when ``IDP_METRICS_ENABLED`` is on; nothing otherwise.

    :param backlog: reads the outbox backlog (``idp_app.outbox.backlog``) at scrape time.

    :raises ConfigurationError: naming ``IDP_METRICS_ENABLED`` when ``prometheus_client`` is
        missing or ``PROMETHEUS_MULTIPROC_DIR`` is misconfigured.
    """
    if not app.config[KEY]:
        return
    require_prometheus(KEY)
    multiprocess_dir(KEY)
    metrics = IdpMetrics()
    app.extensions["idp_app"]["metrics"] = metrics
    with app.app_context():
        for engine in db.engines.values():
            _time_statements(engine, metrics.db_query)
    live = (OutboxCollector(backlog),)

    @app.after_request
    def count(response: Response) -> Response:
        metrics.count_response(request.endpoint, response.status_code)
        return response

    def scrape() -> Response:
        return Response(exposition(metrics.registry, live), headers={"Content-Type": CONTENT_TYPE})

    app.add_url_rule("/metrics", "metrics", scrape, methods=["GET"])

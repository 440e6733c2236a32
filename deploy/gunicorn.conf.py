"""gunicorn settings for a service (or the IdP) that serves Prometheus metrics from every worker.

Use: ``PROMETHEUS_MULTIPROC_DIR=/run/billing-metrics gunicorn -c deploy/gunicorn.conf.py
'example_service:create_app()'`` with ``RBAC_ABAC_METRICS_ENDPOINT=/metrics`` (the IdP:
``IDP_METRICS_ENABLED=1``). The variable must be in the environment gunicorn starts with, so the
workers import ``prometheus_client`` in multiprocess mode; give each service its own directory.
Without it every worker keeps its own registry and a scrape sees only the worker that answered.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prometheus_client import multiprocess

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))


def on_starting(server: Any) -> None:
    """Start from an empty directory: files left by a previous run would be counted again."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for stale in Path(path).glob("*.db"):
            stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: drop its live gauges (the breaker); its counters stay in the sums."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)

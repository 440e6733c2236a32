"""billing_api's /metrics under a real gunicorn with 2 workers in prometheus_client's multiprocess
mode (``deploy/gunicorn.conf.py``): any worker's scrape is the sum of both workers' counts, and
``rbac-abac stats --url`` prints those totals."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from stack import Proc, http_answers, wait_until

from tests.e2e.conftest import E2E

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def scrape(url: str) -> tuple[int, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    response = requests.get(url + "/metrics", timeout=5)
    assert response.status_code == 200, response.text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    return int(response.headers["X-Worker-Pid"]), samples


def value(samples, name: str, **labels: str) -> float:
    labels.setdefault("service", "billing_api")
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_scrape_sums_every_worker(make_stack: Callable[..., E2E], tmp_path: Path) -> None:
    stack = make_stack()
    assert stack.service is not None
    stack.service.stop()  # started again in multiprocess mode, with the deploy/ hooks
    metrics_dir = tmp_path / "prometheus"
    env = stack.service_env()
    env.update(
        RBAC_ABAC_METRICS_ENDPOINT="/metrics",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        WEB_CONCURRENCY="2",
    )
    argv = [
        sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
        "--bind", f"127.0.0.1:{stack.service_port}", "--graceful-timeout", "3",
        "--error-logfile", "-", "example_service:create_app()",
    ]  # fmt: skip
    stack.service = Proc("billing_api-multiproc", argv, env, stack.workdir / "mp.log").start()
    url = stack.service_url
    wait_until(lambda: http_answers(url + "/healthz"), 30, "billing_api", stack.service)

    bob = stack.token("bob")
    answered: Counter[int] = Counter()
    deadline = time.monotonic() + 20
    while len(answered) < 2 or min(answered.values()) < 2:
        assert time.monotonic() < deadline, f"only workers {dict(answered)} answered"
        for _, pid, status, _ in stack.burst("/whoami", bob, 8):
            assert status == 200
            answered[pid] += 1
    total = sum(answered.values())

    scraped_by: set[int] = set()
    deadline = time.monotonic() + 20
    while len(scraped_by) < 2:  # whichever worker answers the scrape, it answers for both
        assert time.monotonic() < deadline, f"only workers {scraped_by} answered /metrics"
        pid, samples = scrape(url)
        scraped_by.add(pid)
        assert (
            value(samples, "rbac_abac_decisions_total", result="allow", reason="allowed") == total
        )
        hits = value(samples, "rbac_abac_l1_hits_total")
        misses = value(samples, "rbac_abac_l1_misses_total")
        assert hits + misses == total
        assert misses >= 2  # each worker has its own L1: each missed bob once at least
        assert value(samples, "rbac_abac_breaker_open") == 0
    assert scraped_by == set(answered)

    cli_env = {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    out = stack.flask(
        "example_service:create_app()", "rbac-abac", "stats", "--url", url, env=cli_env
    )
    stats = json.loads(out)
    assert stats["source"] == url + "/metrics"
    assert stats["allowed"] == total and stats["l1_hits"] + stats["l1_misses"] == total

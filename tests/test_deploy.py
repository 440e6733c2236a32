"""``deploy/``: the alert rules pass promtool (syntax and unit tests), and every PromQL expression
of the rules and of the Grafana dashboard names metrics the code actually exports."""

from __future__ import annotations

import json
import re
import runpy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from flask_rbac_abac.metrics import PrometheusMetrics, exported_names
from idp_app.metrics import IdpMetrics, OutboxCollector

from .conftest import IN_CI

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "flask-rbac-abac.json"

#: PromQL words that are not metric names (functions are recognised by their parenthesis).
KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords,
    label names in matchers or groupings, strings or range durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = _GROUPING.sub("", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        if expr[match.end() :].lstrip().startswith("(") or match.group().lower() in KEYWORDS:
            continue
        names.add(match.group())
    return names


def exported() -> set[str]:
    names = exported_names(PrometheusMetrics("billing_api").registry)
    names |= exported_names(IdpMetrics().registry)
    names |= {family.name for family in OutboxCollector(lambda: (1, 2.0)).collect()}
    return names


def dashboard_expressions() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    found = [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":  # label_values(metric, label): the metric is checked
            metric = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
            assert metric is not None, variable["definition"]
            found.append((f"${variable['name']}", metric.group(1)))
    return found


def alert_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


def test_the_name_parser() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, service) (rate(a_bucket{service=~"$s"}'
        "[$__rate_interval]))) / on (service) group_left b_total > 0.8 and max(c) offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def test_every_dashboard_expression_uses_exported_metrics() -> None:
    names = exported()
    expressions = dashboard_expressions()
    assert len(expressions) >= 12
    for title, expr in expressions:
        used = metric_names(expr)
        assert used, f"panel {title!r}: no metric in {expr!r}"
        assert used <= names, f"panel {title!r} uses metrics nobody exports: {used - names}"


def test_the_dashboard_shows_every_metric_of_the_issue() -> None:
    used = set().union(*(metric_names(expr) for _, expr in dashboard_expressions()))
    wanted = {
        "rbac_abac_l1_hits_total", "rbac_abac_l1_misses_total", "rbac_abac_l2_hits_total",
        "rbac_abac_l2_misses_total", "rbac_abac_auto_refreshes_total",
        "rbac_abac_manual_refreshes_total", "rbac_abac_refresh_ahead_total",
        "rbac_abac_stale_served_total", "rbac_abac_idp_errors_total",
        "rbac_abac_redis_errors_total", "rbac_abac_breaker_open", "rbac_abac_decisions_total",
        "rbac_abac_lookup_seconds_bucket", "idp_refresh_requests_total",
        "idp_db_query_seconds_bucket", "idp_outbox_backlog", "idp_publishes_total",
        "idp_warmed_keys_total", "idp_token_requests_total", "idp_rate_limited_total",
    }  # fmt: skip
    assert wanted - used == set()


def test_every_alert_expression_uses_exported_metrics() -> None:
    names = exported()
    alerts = dict(alert_expressions())
    assert {
        "RbacAbacHitRatioLow",
        "RbacAbacRefreshErrors",
        "RbacAbacBreakerOpen",
        "IdpOutboxBacklogGrowing",
        "RbacAbacRedisErrors",
    } <= set(alerts)
    for alert, expr in alerts.items():
        used = metric_names(expr)
        assert used and used <= names, f"{alert} uses metrics nobody exports: {used - names}"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = (
            "promtool not found: install Debian's `prometheus` package "
            "(`make test` does it when run as root)"
        )
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


@pytest.mark.parametrize(
    "argv",
    [["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]],
    ids=["check", "test"],
)
def test_promtool(argv: list[str]) -> None:
    done = subprocess.run(
        [promtool(), *argv],
        cwd=DEPLOY / "prometheus",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_gunicorn_hooks_mark_dead_workers(tmp_path, monkeypatch) -> None:
    hooks = runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))
    directory = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    hooks["on_starting"](None)
    (directory / "counter_1.db").write_bytes(b"")
    (directory / "gauge_livemax_4242.db").write_bytes(b"")
    hooks["child_exit"](None, type("Worker", (), {"pid": 4242})())
    assert sorted(p.name for p in directory.iterdir()) == ["counter_1.db"]
    hooks["on_starting"](None)  # a new run starts from an empty directory
    assert list(directory.iterdir()) == []

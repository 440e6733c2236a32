"""The IdP's ``/metrics`` (IDP_METRICS_ENABLED), on SQLite and PostgreSQL with the real Redis."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from flask import abort, request
from prometheus_client.parser import text_string_to_metric_families

import idp_app
from flask_rbac_abac import metrics as library_metrics
from flask_rbac_abac.errors import ConfigurationError
from flask_rbac_abac.metrics import CONTENT_TYPE
from idp_app import metrics

from .conftest import Api


def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")  # no token: Prometheus scrapes without one
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def value(samples: Any, name: str, **labels: str) -> float:
    return float(samples.get((name, tuple(sorted(labels.items()))), 0.0))


@pytest.fixture
def app(make_app, database_url, real_redis) -> Any:
    app = make_app(database_url, IDP_METRICS_ENABLED=True)

    @app.before_request
    def limited() -> None:  # what a rate limiter does: refuse with 429 before the view
        if request.headers.get("X-Test-Limited"):
            abort(429)

    return app


def test_disabled_by_default(make_app, sqlite_url, real_redis) -> None:
    app = make_app(sqlite_url)
    assert app.test_client().get("/metrics").status_code == 404
    assert "metrics" not in app.extensions["idp_app"]


def test_refresh_requests_publishes_and_database_latency(app, client) -> None:
    api = Api(client)
    token = api.service()
    alice = api.user("alice")
    api.roles(alice, ["viewer"])
    before = scrape(client)
    statements = value(before, "idp_db_query_seconds_count")
    assert statements > 0  # the admin calls above went to the database
    published = value(before, "idp_publishes_total", result="ok")

    assert api.refresh(alice, token=token).status_code == 200
    assert api.refresh(alice, token="not-the-token").status_code == 401
    assert api.refresh(999999, token=token).status_code == 404
    assert api.refresh("x", token=token).status_code == 400
    after = scrape(client)
    assert value(after, "idp_refresh_requests_total", result="ok") == 1
    assert value(after, "idp_refresh_requests_total", result="refused") == 1
    assert value(after, "idp_refresh_requests_total", result="not_found") == 1
    assert value(after, "idp_refresh_requests_total", result="bad_request") == 1
    # The good refresh published its new value, the unknown user's eviction one more.
    assert value(after, "idp_publishes_total", result="ok") == published + 2
    assert value(after, "idp_publishes_total", result="failed") == 0
    assert value(after, "idp_db_query_seconds_count") > statements
    assert value(after, "idp_db_query_seconds_bucket", le="+Inf") == value(
        after, "idp_db_query_seconds_count"
    )


def test_token_requests_and_rate_limit_refusals(app, client) -> None:
    Api(client).user("bob")
    good = {"username": "bob", "password": "bob-pass"}
    assert client.post("/api/token", json=good).status_code == 200
    assert client.post("/api/token", json={**good, "password": "nope"}).status_code == 401
    assert client.post("/api/token", json={"username": 5, "password": "x"}).status_code == 400
    limited = client.post("/api/token", json=good, headers={"X-Test-Limited": "1"})
    assert limited.status_code == 429
    samples = scrape(client)
    assert value(samples, "idp_token_requests_total", result="issued") == 1
    assert value(samples, "idp_token_requests_total", result="refused") == 1
    assert value(samples, "idp_token_requests_total", result="bad_request") == 1
    assert value(samples, "idp_token_requests_total", result="rate_limited") == 1
    assert value(samples, "idp_rate_limited_total", endpoint="token.issue_token") == 1
    text = client.get("/metrics").get_data(as_text=True)
    assert "bob-pass" not in text and "bob" not in text


def test_warmed_keys_counter(app, client) -> None:
    with app.app_context():
        metrics.warmed(3)
        metrics.warmed(0)
    metrics.warmed(5)  # outside an app: nothing to count into, and no error
    assert value(scrape(client), "idp_warmed_keys_total") == 3


def test_outbox_backlog_is_read_at_scrape_time(make_app, sqlite_url, real_redis, monkeypatch):
    backlog = [(4, 12.5)]
    monkeypatch.setattr(idp_app.outbox, "backlog", lambda: backlog[0])
    client = make_app(sqlite_url, IDP_METRICS_ENABLED=True).test_client()
    samples = scrape(client)
    assert value(samples, "idp_outbox_backlog") == 4
    assert value(samples, "idp_outbox_oldest_age_seconds") == 12.5
    backlog[0] = SimpleNamespace(rows=0, oldest_age=None)  # the outbox's own Backlog shape
    samples = scrape(client)
    assert value(samples, "idp_outbox_backlog") == 0
    assert value(samples, "idp_outbox_oldest_age_seconds") == 0


def test_outbox_backlog_absent_or_failing_reports_nothing(make_app, sqlite_url, real_redis):
    def broken() -> Any:
        raise RuntimeError("no such table: outbox")

    assert list(metrics.OutboxCollector(None).collect()) == []
    app = make_app(sqlite_url, IDP_METRICS_ENABLED=True)
    with app.test_request_context():
        assert list(metrics.OutboxCollector(broken).collect()) == []
    samples = scrape(app.test_client())  # the real outbox, empty
    assert value(samples, "idp_outbox_backlog") == 0
    assert value(samples, "idp_outbox_oldest_age_seconds") == 0


def test_enabled_without_prometheus_client_names_the_key(make_app, sqlite_url, monkeypatch):
    monkeypatch.setattr(library_metrics, "AVAILABLE", False)
    with pytest.raises(ConfigurationError) as raised:
        make_app(sqlite_url, IDP_METRICS_ENABLED=True)
    assert str(raised.value) == (
        "IDP_METRICS_ENABLED is set but prometheus_client is not installed: "
        'pip install "flask-rbac-abac[prometheus]"'
    )


def test_a_bad_flag_names_the_key(make_app, sqlite_url) -> None:
    with pytest.raises(ConfigurationError) as raised:
        make_app(sqlite_url, IDP_METRICS_ENABLED="maybe")
    assert str(raised.value) == "IDP_METRICS_ENABLED must be a boolean, got 'maybe'"

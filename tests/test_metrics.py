"""The Prometheus endpoint (RBAC_ABAC_METRICS_ENDPOINT) and ``rbac-abac stats --url``.

The app runs on fakeredis with the `responses` IdP; each step checks the exact values the
endpoint serves after hits, misses, refreshes and decisions.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import fakeredis
import pytest
import requests
import responses
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.serving import make_server

from flask_rbac_abac import RBACABAC, ConfigurationError, metrics
from flask_rbac_abac.metrics import Stats

from .conftest import IDP, SERVICE, FakeIdP, bearer, make_token
from .test_extension import build_app

USER = 424242  # an id that must never show up in a label


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    labels.setdefault("service", SERVICE)
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def fake_idp(mock, key_prefix) -> FakeIdP:
    """The IdP of the shared fixtures, on a `responses` mock this module can add passthrus to."""
    return FakeIdP(mock, fakeredis.FakeRedis(server=fakeredis.FakeServer()), key_prefix)


@pytest.fixture
def app(fake_idp, key_prefix) -> Iterator[Flask]:
    fake_idp.add(USER, roles=["accountant"], permissions=["invoice:read"])
    fake_idp.add(3, roles=["viewer"], permissions=[])
    app = build_app(
        fake_idp.client,
        key_prefix,
        RBAC_ABAC_METRICS_ENDPOINT="/metrics",
        RBAC_ABAC_REQUIRE_AUTHORIZATION=True,
    )
    yield app
    with app.app_context():
        app.extensions["rbac_abac"].close(app)


def test_values_follow_misses_hits_refreshes_and_decisions(app) -> None:
    client = app.test_client()
    before = scrape(client)  # no token: the endpoint is public, even with the route guard on
    assert value(before, "rbac_abac_l1_misses_total") == 0
    assert value(before, "rbac_abac_breaker_open") == 0

    assert client.get("/invoices", headers=bearer(USER)).status_code == 200
    first = scrape(client)
    assert value(first, "rbac_abac_l1_misses_total") == 1
    assert value(first, "rbac_abac_l2_misses_total") == 1
    assert value(first, "rbac_abac_auto_refreshes_total") == 1
    assert value(first, "rbac_abac_l1_hits_total") == 0
    assert value(first, "rbac_abac_lookup_seconds_count") == 1
    assert value(first, "rbac_abac_decisions_total", result="allow", reason="allowed") == 1

    assert client.get("/invoices", headers=bearer(USER)).status_code == 200
    assert client.get("/invoices", headers=bearer(3)).status_code == 403
    assert client.get("/broken", headers=bearer(USER)).status_code == 403
    second = scrape(client)
    assert value(second, "rbac_abac_l1_hits_total") == 2
    assert value(second, "rbac_abac_l1_misses_total") == 2
    assert value(second, "rbac_abac_auto_refreshes_total") == 2
    assert value(second, "rbac_abac_decisions_total", result="allow", reason="allowed") == 2
    assert (
        value(second, "rbac_abac_decisions_total", result="deny", reason="missing_permission") == 1
    )
    assert value(second, "rbac_abac_decisions_total", result="error", reason="rule_error") == 1

    with app.app_context():
        app.extensions["rbac_abac"].client.refresh_user_attributes_from_identity_provider(USER)
        assert app.extensions["rbac_abac"].prometheus() == client.get("/metrics").get_data(
            as_text=True
        )
    assert value(scrape(client), "rbac_abac_manual_refreshes_total") == 1


def test_every_counter_is_exported_and_refresh_ahead_is_defined(app) -> None:
    samples = scrape(app.test_client())
    names = {name for name, _ in samples}
    for counter in metrics.COUNTERS:
        if counter not in metrics.DECISION_COUNTERS:
            assert f"rbac_abac_{counter}_total" in names
    assert "rbac_abac_refresh_ahead_total" in names


def test_no_user_id_or_token_in_any_label(app) -> None:
    client = app.test_client()
    token = make_token(USER)
    headers = {"Authorization": f"Bearer {token}"}
    for path in ("/invoices", "/invoices", "/finance", "/broken", "/reports"):
        client.get(path, headers=headers)
    client.get("/invoices", headers={"Authorization": "Bearer not-a-token"})
    samples = scrape(client)
    assert value(samples, "rbac_abac_decisions_total", result="allow", reason="allowed") == 2
    labels = {item for _, pairs in samples for item in pairs}
    assert {name for name, _ in labels} <= {"service", "result", "reason", "le"}
    for _, label_value in labels:
        assert str(USER) not in label_value
        assert token not in label_value and "not-a-token" not in label_value


def test_reason_codes_are_bounded() -> None:
    stats = Stats()
    stats.exporter = metrics.PrometheusMetrics(SERVICE)
    stats.decision("deny", "User 12 said: no")
    stats.decision("deny", "missing_role")
    text = stats.exporter.render().decode()
    assert 'reason="other",result="deny",service="billing_api"} 1.0' in text
    assert 'reason="missing_role",result="deny",service="billing_api"} 1.0' in text


def test_breaker_gauge_opens_when_the_idp_fails(key_prefix) -> None:
    backend = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    app = build_app(backend, key_prefix, RBAC_ABAC_METRICS_ENDPOINT="/metrics")
    client = app.test_client()
    with responses.RequestsMock() as down:
        down.add("POST", IDP + "/api/refresh-user-cache/", status=502)
        for user in (7, 8, 9):
            assert client.get("/invoices", headers=bearer(user)).status_code == 503
    samples = scrape(client)
    assert value(samples, "rbac_abac_breaker_open") == 1
    assert value(samples, "rbac_abac_idp_errors_total") == 3


def test_without_the_key_there_is_no_endpoint(fake_idp, key_prefix) -> None:
    app = build_app(fake_idp.client, key_prefix)
    assert app.test_client().get("/metrics").status_code == 404
    with app.app_context(), pytest.raises(ConfigurationError) as raised:
        app.extensions["rbac_abac"].prometheus()
    assert str(raised.value) == (
        "rbac.prometheus() needs RBAC_ABAC_METRICS_ENDPOINT (and prometheus_client)"
    )


def test_without_prometheus_client_the_key_is_a_configuration_error(
    fake_idp, key_prefix, monkeypatch
) -> None:
    monkeypatch.setattr(metrics, "AVAILABLE", False)
    with pytest.raises(ConfigurationError) as raised:
        build_app(fake_idp.client, key_prefix, RBAC_ABAC_METRICS_ENDPOINT="/metrics")
    assert str(raised.value) == (
        "RBAC_ABAC_METRICS_ENDPOINT is set but prometheus_client is not installed: "
        'pip install "flask-rbac-abac[prometheus]"'
    )


@pytest.mark.parametrize("bad", ["metrics", 5, "/me trics"])
def test_a_malformed_endpoint_is_a_configuration_error(fake_idp, key_prefix, bad) -> None:
    with pytest.raises(ConfigurationError) as raised:
        build_app(fake_idp.client, key_prefix, RBAC_ABAC_METRICS_ENDPOINT=bad)
    assert str(raised.value) == (
        f"RBAC_ABAC_METRICS_ENDPOINT must be a URL path such as '/metrics', got {bad!r}"
    )


def test_a_multiprocess_dir_set_after_import_is_a_configuration_error(monkeypatch) -> None:
    # This process imported prometheus_client without the variable: setting it now is refused.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/nonexistent")
    with pytest.raises(ConfigurationError) as raised:
        metrics.PrometheusMetrics(SERVICE)
    assert "PROMETHEUS_MULTIPROC_DIR must be in the process's environment" in str(raised.value)


def test_two_apps_count_apart(fake_idp, key_prefix) -> None:
    rbac = RBACABAC()
    first = build_app(fake_idp.client, key_prefix, rbac, RBAC_ABAC_METRICS_ENDPOINT="/metrics")
    second = build_app(fake_idp.client, key_prefix, rbac, RBAC_ABAC_METRICS_ENDPOINT="/m")
    assert first.test_client().get("/invoices", headers=bearer(USER)).status_code == 403
    assert value(scrape(first.test_client()), "rbac_abac_l1_misses_total") == 1
    second_text = second.test_client().get("/m").get_data(as_text=True)
    assert 'rbac_abac_l1_misses_total{service="billing_api"} 0.0' in second_text


# -- rbac-abac stats --url ------------------------------------------------------------------


@pytest.fixture
def served(app) -> Iterator[str]:
    """``app`` on a real HTTP port (a thread), as the running service."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def test_stats_url_reads_the_running_service(app, served, mock, fake_idp, key_prefix) -> None:
    mock.add_passthru(served)
    for _ in range(3):
        assert requests.get(served + "/invoices", headers=bearer(USER), timeout=5).ok
    assert requests.get(served + "/invoices", headers=bearer(3), timeout=5).status_code == 403
    # The CLI runs in another app (a process of its own in real life): its counters are zero.
    cli_app = build_app(fake_idp.client, key_prefix, RBAC_ABAC_METRICS_ENDPOINT="/metrics")
    result = cli_app.test_cli_runner().invoke(args=["rbac-abac", "stats", "--url", served])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["source"] == served + "/metrics"
    assert (stats["l1_hits"], stats["l1_misses"], stats["auto_refreshes"]) == (2, 2, 2)
    assert (stats["allowed"], stats["denied"]) == (3, 1)
    assert stats["decisions"] == {"allow": {"allowed": 3}, "deny": {"missing_permission": 1}}
    assert stats["hit_ratio"] == 0.5 and stats["breaker_open"] is False

    own = cli_app.test_cli_runner().invoke(args=["rbac-abac", "stats"])
    assert json.loads(own.output)["l1_hits"] == 0


def test_stats_url_without_an_endpoint_or_metrics_fails_clearly(mock, fake_idp, key_prefix) -> None:
    plain = build_app(fake_idp.client, key_prefix)
    result = plain.test_cli_runner().invoke(args=["rbac-abac", "stats", "--url", "http://x"])
    assert result.exit_code == 1
    assert "--url needs RBAC_ABAC_METRICS_ENDPOINT" in result.output

    configured = build_app(fake_idp.client, key_prefix, RBAC_ABAC_METRICS_ENDPOINT="/metrics")
    mock.add("GET", "http://svc.test/metrics", status=404)
    missing = configured.test_cli_runner().invoke(
        args=["rbac-abac", "stats", "--url", "http://svc.test", "--timeout", "1"]
    )
    assert missing.exit_code == 1
    assert "GET http://svc.test/metrics answered 404, not metrics" in missing.output


def test_counts_from_many_threads_are_exact_and_survive_the_threads() -> None:
    import threading

    stats = Stats()
    per_thread, rounds = 5000, 3

    def count() -> None:
        for _ in range(per_thread):
            stats.incr("l1_hits")
        stats.decision("allow", "allowed")
        stats.observe_lookup(0.5)

    for _ in range(rounds):  # threads end between rounds: their counts are folded, not lost
        threads = [threading.Thread(target=count) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    snap = stats.snapshot()
    assert snap["l1_hits"] == 8 * rounds * per_thread
    assert snap["allowed"] == 8 * rounds and snap["denied"] == 0
    assert snap["timed_lookups"] == 8 * rounds and snap["lookup_seconds_total"] == 4.0 * rounds
    assert len(stats._tallies) <= 8  # only live threads (and this round's) keep a tally


@pytest.mark.parametrize("exported", [False, True])
def test_a_hot_allow_counts_one_l1_hit_and_one_allow(exported: bool) -> None:
    stats = Stats()
    if exported:
        stats.exporter = metrics.PrometheusMetrics(SERVICE)
    stats.hot_allow()
    stats.hot_allow()
    stats.l1_hit()
    stats.allow()
    snap = stats.snapshot()
    assert (snap["l1_hits"], snap["allowed"], snap["denied"], snap["l1_misses"]) == (3, 3, 0, 0)
    if exported:
        text = stats.exporter.render().decode()
        assert 'rbac_abac_l1_hits_total{service="billing_api"} 3.0' in text
        assert 'reason="allowed",result="allow",service="billing_api"} 3.0' in text

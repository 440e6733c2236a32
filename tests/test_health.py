"""HealthState: last-known ok/degraded per component, probes in the background, rate-limited."""

from __future__ import annotations

import threading
import time

from flask_rbac_abac.health import HealthState

from .servers import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_unheard_of_is_degraded_and_evidence_decides() -> None:
    state = HealthState({"redis": lambda: True}, timer=Clock())
    assert state.state("redis") == "degraded"
    state.record("redis", True)
    assert state.state("redis") == "ok"
    state.record("redis", False)
    assert state.state("redis") == "degraded"


def test_report_never_waits_for_a_probe_and_probes_at_most_once_per_interval() -> None:
    clock = Clock()
    release = threading.Event()
    calls = []

    def slow_probe() -> bool:
        calls.append(clock.now)
        release.wait(5)
        return True

    state = HealthState({"idp": slow_probe}, probe_every=1.0, timer=clock)
    try:
        started = time.monotonic()
        for _ in range(50):
            assert state.report() == {"idp": "degraded"}
        assert time.monotonic() - started < 2.5  # the probe holds 5 s: none of this waited on it
        assert wait_for(lambda: len(calls) == 1)
        clock.now += 5  # due again, but the first probe still runs: no second one
        state.report()
        time.sleep(0.05)
        assert len(calls) == 1
    finally:
        release.set()
    assert wait_for(lambda: state.report() == {"idp": "ok"})
    # Clock still: however often asked, no new probe once one ran in this interval.
    assert wait_for(lambda: not state._running)
    probes = len(calls)
    for _ in range(50):
        state.report()
    time.sleep(0.05)
    assert len(calls) == probes
    clock.now += 1.5
    state.report()
    assert wait_for(lambda: len(calls) == probes + 1)


def test_a_probe_that_raises_is_degraded() -> None:
    def broken() -> bool:
        raise OSError("connection reset by 10.0.0.7")

    state = HealthState({"redis": broken})
    assert state.probe_all() == {"redis": "degraded"}

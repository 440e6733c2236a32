"""Health answered from what the process already knows, never from a call made while asking.

A health endpoint is public and polled by load balancers. If answering it waited on Redis or the
identity provider, a silent dependency would hold the worker for a timeout per call, and every
authorized request queued behind it with it. So each component's state is the latest evidence:
the request path records every Redis and IdP success or failure as it happens, and asking for
health at most starts a probe in a background thread (rate-limited, short timeouts) whose result
a later answer uses. A component nobody has heard from yet is ``degraded``: health never claims
what it has not seen.

The answer says only ``ok`` or ``degraded`` per component: no addresses, no exception text, which
belong in logs, not on a public endpoint.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

OK = "ok"
DEGRADED = "degraded"

#: Seconds between two background probes of one component (per process).
PROBE_EVERY = 1.0


class HealthState:
    """Last-known ``ok``/``degraded`` per component, refreshed by evidence and by probes.

    :param probes: component name -> a callable that checks it and returns ``True`` when it is
        healthy. It runs in a background thread, must bound its own time and may raise (a raise
        counts as degraded).
    :param probe_every: minimum seconds between two probes of one component.
    """

    def __init__(
        self,
        probes: Mapping[str, Callable[[], bool]],
        *,
        probe_every: float = PROBE_EVERY,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probes = dict(probes)
        self._probe_every = probe_every
        self._timer = timer
        self._lock = threading.Lock()
        self._ok: dict[str, bool] = {}
        self._probed_at: dict[str, float] = {}
        self._running: set[str] = set()
        self._pid = os.getpid()

    def record(self, component: str, ok: bool) -> None:
        """What the request path just saw (a single dict store: cheap enough for every call)."""
        self._ok[component] = ok

    def state(self, component: str) -> str:
        return OK if self._ok.get(component) else DEGRADED

    def report(self) -> dict[str, str]:
        """``{component: "ok"|"degraded"}`` now; starts the probes that are due, without
        waiting for them."""
        report = {name: self.state(name) for name in self._probes}
        self._start_due_probes()
        return report

    def probe(self, component: str) -> bool:
        """Run one component's probe here and now, record and return its result."""
        try:
            ok = bool(self._probes[component]())
        except Exception as exc:  # a probe that raises is a failed probe, never a crash
            log.warning("health probe of %s failed: %s", component, type(exc).__name__)
            ok = False
        self.record(component, ok)
        return ok

    def probe_all(self) -> dict[str, str]:
        """Probe every component in this thread (for tools and tests) and return the states."""
        for name in self._probes:
            self.probe(name)
        return {name: self.state(name) for name in self._probes}

    def _start_due_probes(self) -> None:
        now = self._timer()
        due = []
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's probe threads are not ours
                self._pid = os.getpid()
                self._running.clear()
            for name in self._probes:
                last = self._probed_at.get(name)
                if name in self._running or (last is not None and now - last < self._probe_every):
                    continue
                self._running.add(name)
                self._probed_at[name] = now
                due.append(name)
        for name in due:
            thread = threading.Thread(
                target=self._probe_in_background, args=(name,), name=f"rbac-abac-health-{name}"
            )
            thread.daemon = True
            thread.start()

    def _probe_in_background(self, component: str) -> None:
        try:
            self.probe(component)
        finally:
            with self._lock:
                self._running.discard(component)

"""e2e fixtures: the real processes, started per test and stopped in teardown even on failure.

Each test gets its own ``redis-server`` on a free port (so a test may kill and restart it), an IdP
and billing_api under gunicorn with 2 workers each on free loopback ports, a SQLite database in
``tmp_path`` and secrets made up for the test. Logs go to files in ``tmp_path`` and are printed
when the test fails.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from stack import (  # noqa: E402 - scripts/ is not a package
    Stack,
    StackError,
    free_port,
    port_open,
    start_redis_server,
)

from tests.conftest import service_missing  # noqa: E402


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


class E2E(Stack):
    """A :class:`Stack` with a dedicated redis-server and HTTP helpers for the tests."""

    redis_port: int = 0

    def restart_redis(self, down_for: float = 0.0) -> None:
        """SIGKILL the redis-server and start a new, empty one on the same port."""
        old = next(p for p in self.others if p.name.startswith("redis"))
        old.kill()
        assert not port_open(self.redis_port)
        time.sleep(down_for)
        self.others.remove(old)
        self.others.append(start_redis_server(self.redis_port, self.workdir, "redis-server-2"))

    def kill_redis(self) -> None:
        proc = next(p for p in self.others if p.name.startswith("redis"))
        proc.kill()
        self.others.remove(proc)
        assert not port_open(self.redis_port)

    def start_redis_again(self) -> None:
        self.others.append(start_redis_server(self.redis_port, self.workdir, "redis-server-2"))

    def get(self, path: str, token: str | None = None, timeout: float = 5.0) -> requests.Response:
        """One request on a fresh connection (so the kernel may pick either worker)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.service_url + path, headers=headers, timeout=timeout)

    def burst(
        self, path: str, token: str | None, count: int = 16
    ) -> list[tuple[float, int, int, Any]]:
        """``count`` concurrent requests: ``(monotonic time, worker pid, status, json)`` each."""
        return [answer[1:] for answer in self.timed_burst(path, token, count)]

    def timed_burst(
        self, path: str, token: str | None, count: int = 16
    ) -> list[tuple[float, float, int, int, Any]]:
        """:meth:`burst` with the time each request was sent too: ``(sent, answered, pid, status,
        json)``. Answers of one burst come back in any order: a worker served a request before
        another for sure only when the first was answered before the second was sent."""

        def one(_: int) -> tuple[float, float, int, int, Any]:
            sent = time.monotonic()
            response = self.get(path, token)
            return (
                sent,
                time.monotonic(),
                int(response.headers["X-Worker-Pid"]),
                response.status_code,
                response.json(),
            )

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(one, range(count)))

    def burst_every_worker(
        self, path: str, token: str | None, count: int = 16, seconds: float = 15
    ) -> list[tuple[float, int, int, Any]]:
        """Bursts of ``count`` until every worker has answered one: all their answers.

        One burst may reach a single worker (the kernel picks, and on a busy machine the other
        one may not run meanwhile), so "every worker answers so" takes this, not one burst.
        """
        answers: list[tuple[float, int, int, Any]] = []
        deadline = time.monotonic() + seconds
        while len({pid for _, pid, _, _ in answers}) < self.workers:
            if time.monotonic() > deadline:
                pids = {pid for _, pid, _, _ in answers}
                raise AssertionError(f"only workers {pids} answered {path}")
            answers += self.burst(path, token, count)
        return answers

    def until_every_worker(
        self, path: str, token: str | None, accept: Callable[[int, Any], bool], seconds: float = 15
    ) -> set[int]:
        """Poll until ``self.workers`` distinct workers answered in a way ``accept`` likes."""
        seen: set[int] = set()
        deadline = time.monotonic() + seconds
        while len(seen) < self.workers:
            if time.monotonic() > deadline:
                raise AssertionError(f"only workers {seen} answered {path} as expected")
            for _, pid, status, body in self.burst(path, token):
                if accept(status, body):
                    seen.add(pid)
        return seen

    def wait_subscribed(self, seconds: float = 15) -> set[int]:
        """Every worker's invalidation subscriber is connected (as /healthz reports)."""
        return self.until_every_worker(
            "/healthz",
            None,
            lambda status, body: body.get("subscriber") == "ok",
            seconds,
        )

    def user_id(self, token: str) -> int:
        import jwt

        claims = jwt.decode(token, options={"verify_signature": False})
        return int(claims["sub"])


@pytest.fixture
def make_stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., E2E]]:
    """``make_stack(**Stack fields) -> E2E``: everything started; everything stopped after."""
    if shutil.which("redis-server") is None:
        service_missing("the redis-server binary (e2e tests start their own Redis)")
    stacks: list[E2E] = []

    def factory(**fields: Any) -> E2E:
        port = free_port()
        workdir = tmp_path / f"stack{len(stacks)}"
        workdir.mkdir()
        stack = E2E(workdir=workdir, redis_url=f"redis://127.0.0.1:{port}/0", **fields)
        stack.redis_port = port
        stacks.append(stack)
        try:
            stack.others.append(start_redis_server(port, workdir))
            stack.start()
        except StackError as exc:
            pytest.fail(f"could not start the stack: {exc}", pytrace=False)
        return stack

    yield factory

    failed = any(
        getattr(request.node, f"rep_{when}", None) is not None
        and getattr(request.node, f"rep_{when}").failed
        for when in ("setup", "call")
    )
    for stack in stacks:
        stack.stop()
        if failed:
            print(stack.logs(80))

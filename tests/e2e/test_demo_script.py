"""``scripts/demo.py`` (what ``make demo`` runs), to completion, with each kind of Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from stack import free_port, redis_answers

from tests.conftest import REDIS_URL, service_missing

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def run_demo(**env: str) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        cwd=ROOT,
        env={**os.environ, "DEMO_EXIT": "1", **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).splitlines()


def assert_only_ok(code: int, lines: list[str]) -> None:
    text = "\n".join(lines)
    assert code == 0, text
    steps = [line for line in lines if not line.startswith(("== ", "     "))]
    assert steps, text
    assert [line for line in steps if not line.startswith("ok ")] == [], text
    assert len(steps) >= 24, text
    assert lines[-1].startswith("== all ") and lines[-1].endswith(" steps ok"), text


def test_demo_with_the_machine_redis() -> None:
    if not redis_answers(REDIS_URL):
        service_missing(f"Redis at {REDIS_URL}")
    code, lines = run_demo(RBAC_ABAC_REDIS_URL=REDIS_URL)
    assert_only_ok(code, lines)
    assert f"ok   Redis: using the server answering at {REDIS_URL}" in lines


def test_demo_starts_redis_server_when_none_answers() -> None:
    if shutil.which("redis-server") is None:
        service_missing("the redis-server binary")
    nothing = f"redis://127.0.0.1:{free_port()}/0"
    code, lines = run_demo(RBAC_ABAC_REDIS_URL=nothing)
    assert_only_ok(code, lines)
    assert any(line.startswith(f"ok   Redis: nothing answers at {nothing}; started redis-server")
               for line in lines)  # fmt: skip


def test_demo_falls_back_to_fakeredis_without_redis_server() -> None:
    nothing = f"redis://127.0.0.1:{free_port()}/0"
    # Only the virtualenv on PATH: no redis-server binary to find.
    code, lines = run_demo(RBAC_ABAC_REDIS_URL=nothing, PATH=str(Path(sys.executable).parent))
    assert_only_ok(code, lines)
    assert any("started fakeredis's embedded Redis-compatible server" in line for line in lines)

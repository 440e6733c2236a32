"""``make demo``: the whole system on this machine, and the story of the cache refresh.

1. Finds a Redis: the one at ``RBAC_ABAC_REDIS_URL`` (default ``redis://localhost:6379/0``) if it
   answers, with a fresh key prefix; else a ``redis-server`` on a free port if the binary exists;
   else fakeredis's embedded Redis-compatible server (said plainly).
2. Creates a SQLite database in ``.demo/``, seeds the demo users, starts the IdP and billing_api
   under gunicorn on free 127.0.0.1 ports (2 workers each), with secrets made up for this run.
3. Tells the story of ``shared/origin/redis-cache-refresh.md`` with real HTTP requests, one line
   per step starting with ``ok`` or ``FAIL``.
4. Keeps serving, printing the URLs and a ready ``curl`` line, until Ctrl-C. When stdin is not a
   terminal or ``DEMO_EXIT=1`` is set it stops after the story instead (CI, tests).

Everything it started is stopped on the way out. Exit status 1 when any step failed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from stack import (
    ROOT,
    Proc,
    Stack,
    StackError,
    free_port,
    redacted,
    redis_answers,
    start_fake_redis,
    start_redis_server,
)
from story import Story

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
#: billing_api's in-process (L1) cache TTL in the demo: short, so an expiry shows in seconds.
DEMO_LOCAL_CACHE_TTL = 3


def say(text: str) -> None:
    print(text, flush=True)


def choose_redis(workdir: Path) -> tuple[str, Proc | None, str]:
    """``(url, process we started or None, what to tell the user)``."""
    url = os.environ.get("RBAC_ABAC_REDIS_URL") or DEFAULT_REDIS_URL
    if redis_answers(url):
        return url, None, f"Redis: using the server answering at {redacted(url)}"
    port = free_port()
    if shutil.which("redis-server"):
        proc = start_redis_server(port, workdir)
        why = f"nothing answers at {redacted(url)}"
        return f"redis://127.0.0.1:{port}/0", proc, f"Redis: {why}; started redis-server on :{port}"
    proc = start_fake_redis(port, workdir)
    return (
        f"redis://127.0.0.1:{port}/0",
        proc,
        f"Redis: nothing answers at {redacted(url)} and redis-server is not installed; "
        f"started fakeredis's embedded Redis-compatible server on :{port} "
        "(in memory, for this demo only; use a real Redis in production)",
    )


def interactive() -> bool:
    return sys.stdin.isatty() and os.environ.get("DEMO_EXIT") != "1"


def serve(stack: Stack, story: Story) -> int:
    alice = story.tokens.get("alice", "")
    say("== serving until Ctrl-C")
    say(f"     identity provider  {stack.idp_url}   (admin token {stack.admin_token})")
    say(f"     billing_api        {stack.service_url}   (2 gunicorn workers)")
    say(f"     curl -H 'Authorization: Bearer {alice}' {stack.service_url}/invoices")
    say(
        "     a new token (15 min): curl -H 'Content-Type: application/json' "
        f"""-d '{{"username": "bob", "password": "bob-pass", "audience": "billing_api"}}' """
        f"{stack.idp_url}/api/token"
    )
    while True:
        for proc in stack.processes():
            if not proc.alive():
                say(f"FAIL {proc.name} stopped unexpectedly; its log: {proc.log_path}")
                return 1
        time.sleep(0.5)


def main() -> int:
    demo_root = ROOT / ".demo"
    demo_root.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=demo_root))

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, kill and a closed terminal all stop everything (SIGINT even when the shell that
    # started us had it ignored, as non-interactive shells do for background jobs).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, terminate)
    stack: Stack | None = None
    redis_proc: Proc | None = None
    failed = True
    say("== flask-rbac-abac demo: an identity provider, billing_api and Redis, on this machine")
    try:
        try:
            redis_url, redis_proc, how = choose_redis(workdir)
            say(f"ok   {how}")
            stack = Stack(
                workdir=workdir,
                redis_url=redis_url,
                service_config={"RBAC_ABAC_LOCAL_CACHE_TTL": str(DEMO_LOCAL_CACHE_TTL)},
            )
            if redis_proc is not None:
                stack.others.append(redis_proc)
            say(f"ok   key prefix {stack.key_prefix}; secrets generated for this run")
            stack.seed()
            say(f"ok   SQLite database {stack.workdir / 'idp.sqlite3'} created and seeded")
            stack.start_idp()
            say(f"ok   identity provider up at {stack.idp_url} (gunicorn, 2 workers)")
            stack.start_service()
            say(f"ok   billing_api up at {stack.service_url} (gunicorn, 2 workers)")
        except StackError as exc:
            first, _, rest = str(exc).partition("\n")
            say(f"FAIL {first}")
            for line in rest.splitlines():
                say(f"     | {line}")
            return 1
        say(
            f"== the story (billing_api runs with a {DEMO_LOCAL_CACHE_TTL} s in-process cache "
            "instead of 60 s, so an expiry shows in seconds)"
        )
        story = Story(stack, local_cache_ttl=DEMO_LOCAL_CACHE_TTL)
        ok = story.run()
        story.close()
        failed = not ok
        if not ok:
            say(f"== {len(story.failures)} step(s) failed; logs in {workdir}")
            return 1
        say(f"== all {len(story.passed)} steps ok")
        if interactive():
            failed = serve(stack, story) != 0
        return 1 if failed else 0
    except KeyboardInterrupt:
        say("== stopping")
        return 1 if failed else 0
    finally:
        # Stopping the processes must not be interrupted by a second Ctrl-C.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        if stack is not None:
            stack.stop()
            if redis_proc is None:
                stack.delete_keys()  # a shared Redis: leave nothing behind
        elif redis_proc is not None:
            redis_proc.stop()
        if failed:
            say(f"     logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

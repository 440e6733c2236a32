"""Make sure the Redis and PostgreSQL the test suite uses are up, starting them when they are not.

Redis at 127.0.0.1:6379 and PostgreSQL at 127.0.0.1:5432 are the machine's standard services.
When one does not answer, it is started with the machine's own command (see DEVELOPERS.md);
when it cannot be started, this says so plainly and exits non-zero under CI.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time

REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
    "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip


def answers(port: int, probe: bytes, expect: bytes | None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            if not probe:
                return True
            sock.sendall(probe)
            sock.settimeout(1.0)
            return expect is None or sock.recv(64).startswith(expect)
    except OSError:
        return False


def wait_for(port: int, probe: bytes, expect: bytes | None, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers(port, probe, expect):
            return True
        time.sleep(0.2)
    return False


def ensure_redis() -> bool:
    if answers(6379, b"PING\r\n", b"+PONG"):
        return True
    if shutil.which("redis-server") is None:
        print("redis: nothing answers at 127.0.0.1:6379 and redis-server is not installed")
        return False
    print("redis: not answering, starting it")
    for folder in ("/var/lib/redis", "/var/log/redis"):
        os.makedirs(folder, exist_ok=True)
    subprocess.run(REDIS_START, check=False)  # noqa: S603 - a constant argv, no shell
    return wait_for(6379, b"PING\r\n", b"+PONG")


def ensure_postgres() -> bool:
    if answers(5432, b"", None):
        return True
    versions = sorted(os.path.basename(p) for p in glob.glob("/etc/postgresql/*"))
    if not versions or shutil.which("pg_ctlcluster") is None:
        print("postgres: nothing answers at 127.0.0.1:5432 and no local cluster to start")
        return False
    print("postgres: not answering, starting it")
    cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"]
    subprocess.run(cmd, check=False)  # noqa: S603 - argv built here, no shell
    return wait_for(5432, b"", None)


#: What CI services set ``CI`` to: any of these (any case) means the real services must exist.
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})


def in_ci(environ: dict[str, str] | None = None) -> bool:
    """``CI`` set to any true value (``true``, ``1``, ``yes``, ``on``), as CI services do."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() in TRUE_VALUES


def main() -> int:
    ok = {"redis": ensure_redis(), "postgres": ensure_postgres()}
    for name, up in ok.items():
        print(f"{name}: {'up' if up else 'DOWN'}")
    if all(ok.values()):
        return 0
    if in_ci():
        print("CI needs both services; see DEVELOPERS.md for how they are started")
        return 1
    print("tests that need the missing service will be skipped (they fail when CI is set)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Start and stop the whole system as real processes: Redis, the IdP and billing_api.

Used by ``scripts/demo.py`` and by the e2e tests (``tests/e2e``). Every process runs in its own
process group with its output in a log file, so it can be stopped completely (gunicorn master and
workers together) and its log shown when something goes wrong.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import requests

from flask_rbac_abac.keys import attributes_key

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SERVICE_NAME = "billing_api"

#: Variables that configure the IdP or a service; never inherited from the caller's shell, so
#: a run is exactly what it says it is.
_OWN_ENV_PREFIXES = ("RBAC_ABAC_", "IDP_", "BILLING_API_", "FLASK_")
_OWN_ENV_KEYS = ("DATABASE_URL", "IDENTITY_PROVIDER_URL")


class StackError(RuntimeError):
    """A process did not start or answer in time; the message says which and why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def redacted(url: str) -> str:
    """``url`` without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING at ``url``."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ValueError:
        return False
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without any of this system's configuration, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_OWN_ENV_PREFIXES) and k not in _OWN_ENV_KEYS
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Proc:
    """One started process (and its process group) with its output in ``log_path``."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log_path, "ab") as log:
            log.write(f"--- starting {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(  # noqa: S603 - argv built here, no shell
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        """Signal the whole process group, wait, then SIGKILL whatever is left."""
        if self.popen is None:
            return
        pgid = self.popen.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        # Workers may outlive their master for a moment: make sure the group is gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(2.0)
        self.popen = None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL to the group), as a crash would."""
        self.stop(signal.SIGKILL, timeout=2.0)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def wait_until(check: Any, seconds: float, what: str, proc: Proc | None = None) -> None:
    """Poll ``check()`` until it is true; :class:`StackError` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        if proc is not None and not proc.alive():
            raise StackError(f"{what}: {proc.name} exited\n{proc.log_tail()}")
        try:
            if check():
                return
        except Exception:  # noqa: S110 - not ready yet; keep polling until the deadline
            pass
        if time.monotonic() >= deadline:
            tail = f"\n{proc.log_tail()}" if proc is not None else ""
            raise StackError(f"{what}: not ready after {seconds:.0f} s{tail}")
        time.sleep(0.05)


def http_answers(url: str) -> bool:
    """True when anything answers HTTP at ``url`` (any status)."""
    requests.get(url, timeout=1.0)
    return True


# -- Redis ---------------------------------------------------------------------------------


def start_redis_server(port: int, workdir: Path, name: str = "redis-server") -> Proc:
    """A throwaway ``redis-server`` on 127.0.0.1:``port`` without persistence."""
    argv = [
        shutil.which("redis-server") or "redis-server",
        "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
        "--dir", str(workdir), "--daemonize", "no", "--protected-mode", "yes",
    ]  # fmt: skip
    proc = Proc(name, argv, clean_env(), workdir / f"{name}.log").start()
    wait_until(lambda: redis_answers(f"redis://127.0.0.1:{port}/0"), 10, name, proc)
    return proc


def start_fake_redis(port: int, workdir: Path) -> Proc:
    """fakeredis's embedded Redis-compatible TCP server, in its own process."""
    argv = [PY, str(ROOT / "scripts" / "fake_redis_server.py"), "--port", str(port)]
    proc = Proc("fakeredis", argv, clean_env(), workdir / "fakeredis.log").start()
    wait_until(lambda: redis_answers(f"redis://127.0.0.1:{port}/0"), 10, "fakeredis", proc)
    return proc


# -- the system ----------------------------------------------------------------------------


@dataclass
class Stack:
    """The configuration of one run, and the processes started for it."""

    workdir: Path
    redis_url: str
    key_prefix: str = field(default_factory=lambda: "demo" + secrets.token_hex(4))
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    cache_ttl: int | None = None
    idp_port: int = field(default_factory=free_port)
    service_port: int = field(default_factory=free_port)
    service_config: dict[str, str] = field(default_factory=dict)
    #: Extra IdP environment (e.g. ``SECRET_KEY`` for the admin console).
    idp_config: dict[str, str] = field(default_factory=dict)
    workers: int = 2
    service_token: str = ""
    idp: Proc | None = None
    service: Proc | None = None
    others: list[Proc] = field(default_factory=list)

    @property
    def idp_url(self) -> str:
        return f"http://127.0.0.1:{self.idp_port}"

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.service_port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.idp_url}/.well-known/jwks.json"

    @property
    def database_url(self) -> str:
        return "sqlite:///" + str(self.workdir / "idp.sqlite3")

    def common_env(self) -> dict[str, str]:
        env = {
            "RBAC_ABAC_REDIS_URL": self.redis_url,
            "RBAC_ABAC_KEY_PREFIX": self.key_prefix,
        }
        if self.cache_ttl is not None:
            env["RBAC_ABAC_CACHE_TTL"] = str(self.cache_ttl)
        return clean_env(env)

    def idp_env(self) -> dict[str, str]:
        env = self.common_env()
        env.update(DATABASE_URL=self.database_url, IDP_ADMIN_TOKEN=self.admin_token)
        env.update(self.idp_config)
        return env

    def service_env(self) -> dict[str, str]:
        env = self.common_env()
        env.update(IDENTITY_PROVIDER_URL=self.idp_url, RBAC_ABAC_SERVICE_TOKEN=self.service_token)
        # No secret in the service: it verifies the IdP's tokens with the keys the IdP publishes
        # (init-db generated the IdP's signing key), and only tokens issued for billing_api.
        env.update(RBAC_ABAC_JWKS_URL=self.jwks_url, RBAC_ABAC_JWT_AUDIENCE=SERVICE_NAME)
        env.update({f"BILLING_API_{k}": v for k, v in self.service_config.items()})
        return env

    # -- steps ------------------------------------------------------------------------------

    def flask(self, app: str, *args: str, env: Mapping[str, str] | None = None) -> str:
        """Run ``flask --app APP ARGS`` and return its output; :class:`StackError` on failure."""
        argv = [PY, "-m", "flask", "--app", app, *args]
        done = subprocess.run(  # noqa: S603 - argv built here, no shell
            argv,
            cwd=ROOT,
            env=dict(env) if env is not None else self.idp_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise StackError(
                f"flask --app {app} {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}"
            )
        return done.stdout

    def seed(self) -> None:
        """Create the IdP's database, seed the demo data, read billing_api's service token."""
        self.flask("idp_app", "init-db")
        token_file = self.workdir / "service-tokens.json"
        self.flask("idp_app", "seed-demo", "--token-out", str(token_file))
        tokens = json.loads(token_file.read_text())
        self.service_token = tokens[SERVICE_NAME]

    def gunicorn(self, name: str, app: str, port: int, env: Mapping[str, str]) -> Proc:
        argv = [
            PY, "-m", "gunicorn",
            "--workers", str(self.workers), "--bind", f"127.0.0.1:{port}",
            "--graceful-timeout", "3", "--timeout", "30",
            "--access-logfile", "-", "--error-logfile", "-",
            app,
        ]  # fmt: skip
        proc = Proc(name, argv, env, self.workdir / f"{name}.log").start()
        wait_until(lambda: http_answers(f"http://127.0.0.1:{port}/healthz"), 30, name, proc)
        return proc

    def start_idp(self) -> Proc:
        self.idp = self.gunicorn("idp", "idp_app:create_app()", self.idp_port, self.idp_env())
        return self.idp

    def start_service(self) -> Proc:
        self.service = self.gunicorn(
            "billing_api", "example_service:create_app()", self.service_port, self.service_env()
        )
        return self.service

    def start(self) -> Stack:
        """Seed the database and start the IdP and billing_api (Redis must already answer)."""
        self.seed()
        self.start_idp()
        self.start_service()
        return self

    def processes(self) -> list[Proc]:
        return [p for p in (self.service, self.idp, *self.others) if p is not None]

    def stop(self) -> None:
        """Stop everything this stack started (service first, Redis last); never raises."""
        for proc in self.processes():
            with contextlib.suppress(Exception):
                proc.stop()

    def logs(self, lines: int = 60) -> str:
        return "\n".join(
            f"===== {p.name} ({p.log_path}) =====\n{p.log_tail(lines)}"
            for p in (self.idp, self.service, *self.others)
            if p is not None
        )

    # -- HTTP helpers -----------------------------------------------------------------------

    def token(self, username: str, password: str | None = None) -> str:
        """A bearer token for billing_api from the IdP (``POST /api/token``); the demo password
        by default."""
        response = requests.post(
            f"{self.idp_url}/api/token",
            json={
                "username": username,
                "password": password or f"{username}-pass",
                "audience": SERVICE_NAME,
            },
            timeout=5,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def admin(self, method: str, path: str, body: Any = None) -> requests.Response:
        """An admin API call at the IdP."""
        return requests.request(
            method,
            f"{self.idp_url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=5,
        )

    def redis_client(self) -> redis.Redis[Any]:
        client: redis.Redis[Any] = redis.Redis.from_url(
            self.redis_url, socket_timeout=1, socket_connect_timeout=1, decode_responses=True
        )
        return client

    def key(self, user_id: int | str) -> str:
        return attributes_key(self.key_prefix, SERVICE_NAME, user_id)

    def delete_keys(self) -> None:
        """Remove this run's keys (when sharing a Redis with others); never raises."""
        with contextlib.suppress(Exception):
            client = self.redis_client()
            keys: Iterable[str] = list(client.scan_iter(match=f"{self.key_prefix}:*"))
            for key in keys:
                client.delete(key)
            client.close()

"""The real commands: ``flask --app idp_app ...`` and gunicorn with forked workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from flask_rbac_abac.keys import attributes_key
from flask_rbac_abac.model import UserAttributes
from tests.conftest import REDIS_URL

from .conftest import ADMIN, ADMIN_TOKEN, JWT_SECRET

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def env(tmp_path, key_prefix):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDP_", "RBAC_ABAC_"))}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'idp.sqlite3'}",
        IDP_ADMIN_TOKEN=ADMIN_TOKEN,
        RBAC_ABAC_REDIS_URL=REDIS_URL,
        RBAC_ABAC_KEY_PREFIX=key_prefix,
        RBAC_ABAC_JWT_SECRET=JWT_SECRET,
        PYTHONPATH=str(ROOT),
    )
    return env


def flask(env, *args):
    return subprocess.run(
        [str(BIN / "flask"), "--app", "idp_app", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_flask_cli_refuses_to_start_without_admin_token(env):
    del env["IDP_ADMIN_TOKEN"]
    result = flask(env, "init-db")
    assert result.returncode != 0
    assert "IDP_ADMIN_TOKEN is not set" in result.stderr + result.stdout


def test_gunicorn_workers_serve_refreshes(env, tmp_path, free_port, real_redis, key_prefix):
    assert flask(env, "init-db").returncode == 0
    out = tmp_path / "tokens.json"
    seeded = flask(env, "seed-demo", "--token-out", str(out))
    assert seeded.returncode == 0, seeded.stderr
    token = json.loads(out.read_text())["billing_api"]

    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [str(BIN / "gunicorn"), "--preload", "-w", "2", "-b", f"127.0.0.1:{free_port}",
         "--log-level", "warning", "idp_app:create_app()"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{free_port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (
                "gunicorn did not start: " + (tmp_path / "gunicorn.log").read_text()
            )
            time.sleep(0.1)
        session = requests.Session()
        for uid in (1, 2, 3) * 3:  # alice, bob, carol; dave holds no role there
            r = session.post(
                base + "/api/refresh-user-cache/",
                json={"user_id": uid, "service_name": "billing_api"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            )
            assert r.status_code == 200, r.text
            assert r.json()["cached"] is True
        r = session.put(
            base + "/api/users/2/roles/billing_api", json={"roles": ["viewer"]}, headers=ADMIN
        )
        assert r.status_code == 200
        raw = real_redis.get(attributes_key(key_prefix, "billing_api", 2))
        assert UserAttributes.from_json(raw).roles == ("viewer",)
        r = session.post(base + "/api/token", json={"username": "bob", "password": "bob-pass"})
        assert r.status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()

"""Extra redis-server processes for tests: one to kill, a Sentinel, a three-node cluster.

Every server listens on 127.0.0.1 on a free port, keeps nothing on disk, and is stopped by the
fixture that started it.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from .conftest import IN_CI


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, as Redis Cluster needs."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        if all(_is_free(p) for p in (port, port + 10000)):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for(check, seconds: float = 5.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return False


def pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.2).ping())
    except redis.RedisError:
        return False


def require_redis_server() -> None:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is required when CI is set")
        pytest.skip("redis-server not installed")


class RedisServer:
    """One redis-server process that can be stopped and started again on the same port."""

    def __init__(self, workdir: Path, port: int | None = None, *extra: str) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir), *self.extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        if not wait_for(lambda: pings(self.port)):
            self.stop()
            raise RuntimeError(f"redis-server did not start on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class Cluster:
    """Three masters, no replicas: enough for keys to spread over slots and nodes."""

    def __init__(self, workdir: Path) -> None:
        self.nodes = [
            RedisServer(workdir / f"node{i}", free_cluster_port(), "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
            for i in range(3)
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> Cluster:
        try:
            for node in self.nodes:
                node.start()
        except RuntimeError:
            self.stop()
            raise
        argv = ["redis-cli", "--cluster", "create"]
        argv += [f"127.0.0.1:{n.port}" for n in self.nodes]
        argv += ["--cluster-replicas", "0", "--cluster-yes"]
        subprocess.run(argv, check=True, capture_output=True, timeout=30)

        def ready() -> bool:
            for node in self.nodes:
                info = redis.Redis(port=node.port, decode_responses=True).cluster("info")
                if info.get("cluster_state") != "ok":
                    return False
            return True

        if not wait_for(ready, 15.0, 0.1):
            self.stop()
            raise RuntimeError("redis cluster did not become ready")
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class Sentinel:
    """A master and one Sentinel watching it under the name ``mymaster``."""

    def __init__(self, workdir: Path) -> None:
        self.master = RedisServer(workdir / "master")
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/mymaster/0"

    def start(self) -> Sentinel:
        self.master.start()
        conf = self.workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\n"
            f"sentinel monitor mymaster 127.0.0.1 {self.master.port} 1\n"
        )
        argv = ["redis-server", str(conf), "--sentinel"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)

        def knows_master() -> bool:
            try:
                client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
                return client.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
            except redis.RedisError:
                return False

        if not wait_for(knows_master, 10.0, 0.05):
            self.stop()
            raise RuntimeError("sentinel did not start")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.master.stop()

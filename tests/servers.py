"""Extra redis-server processes for tests: one to kill, Sentinels, clusters (with replicas or not).

Every server listens on 127.0.0.1 on a free port, keeps nothing on disk, and is stopped by the
fixture that started it.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
import uuid
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

    def kill(self) -> None:
        """SIGKILL: the process dies at once, without a goodbye to its clients or peers."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


class Cluster:
    """Three masters (by default without replicas: enough for keys to spread over nodes).

    :param replicas: replicas per master (``1`` makes the 3 + 3 cluster of the failover tests).
    :param node_timeout: ``cluster-node-timeout`` in ms; a dead master is failed over after it.
    """

    def __init__(self, workdir: Path, replicas: int = 0, node_timeout: int = 2000) -> None:
        self.replicas = replicas
        self.nodes = [
            RedisServer(workdir / f"node{i}", free_cluster_port(), "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(node_timeout),
                        "--repl-diskless-sync-delay", "0")
            for i in range(3 * (1 + replicas))
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
        argv += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        subprocess.run(argv, check=True, capture_output=True, timeout=30)

        def ready() -> bool:
            for node in self.nodes:
                client = redis.Redis(port=node.port, decode_responses=True)
                if client.cluster("info").get("cluster_state") != "ok":
                    return False
                # Every node must also know every replica, or a failover could not happen yet.
                if len(self.roles(client)["replica"]) != 3 * self.replicas:
                    return False
            return True

        if not wait_for(ready, 20.0, 0.1):
            self.stop()
            raise RuntimeError("redis cluster did not become ready")
        return self

    @staticmethod
    def roles(client: redis.Redis) -> dict[str, list[int]]:
        """Ports of the live masters and replicas as ``client``'s node sees them."""
        out: dict[str, list[int]] = {"master": [], "replica": []}
        for line in client.execute_command("CLUSTER", "NODES").splitlines():
            fields = line.split()
            flags = fields[2].split(",")
            if "fail" in flags or "fail?" in flags or "noaddr" in flags:
                continue
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            out["master" if "master" in flags else "replica"].append(port)
        return out

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def replica_of(self, master: int) -> int:
        """The port of a live replica of the master on ``master``."""
        for node in self.nodes:
            if node.proc is not None and node.port != master:
                info = redis.Redis(port=node.port, decode_responses=True).info("replication")
                if info.get("master_port") == master:
                    return node.port
        raise LookupError(f"no replica of {master}")

    def promoted(self, port: int) -> bool:
        """True once a live node sees ``port`` as a master and the cluster state is ok."""
        for node in self.nodes:
            if node.proc is None or node.port == port:
                continue
            try:
                client = redis.Redis(port=node.port, decode_responses=True, socket_timeout=0.5)
                state = client.cluster("info")["cluster_state"]
                return state == "ok" and port in self.roles(client)["master"]
            except redis.RedisError:
                continue
        return False

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


class SentinelSet:
    """A master, one replica and three Sentinels (quorum 2) that fail over within seconds.

    ``down_after`` is ``down-after-milliseconds``: how long the master must be silent before the
    Sentinels agree it is down and promote the replica.
    """

    def __init__(self, workdir: Path, down_after: int = 1000) -> None:
        self.workdir = workdir
        self.down_after = down_after
        # No 5 s wait for more replicas before a full sync.
        self.master = RedisServer(workdir / "master", None, "--repl-diskless-sync-delay", "0")
        self.replica: RedisServer | None = None
        self.sentinels = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinels)
        return f"redis+sentinel://{hosts}/mymaster/0"

    def promoted(self) -> bool:
        """True once the Sentinels name the replica as the master."""
        return self.replica is not None and self.master_port() == self.replica.port

    def master_port(self) -> int | None:
        """The master's port as the Sentinels report it (the first one that answers)."""
        for port in self.sentinels:
            try:
                client = redis.Redis(port=port, socket_connect_timeout=0.2, socket_timeout=0.5)
                addr = client.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
            except redis.RedisError:
                continue
            if addr:
                return int(addr[1])
        return None

    def start(self) -> SentinelSet:
        self.master.start()
        self.replica = RedisServer(
            self.workdir / "replica", None, "--replicaof", "127.0.0.1", str(self.master.port)
        ).start()
        replica = redis.Redis(port=self.replica.port, decode_responses=True)
        if not wait_for(lambda: replica.info("replication")["master_link_status"] == "up", 10):
            self.stop()
            raise RuntimeError("replica did not sync")
        # Each Sentinel is told its peers and the replica up front (discovering them through
        # hello messages takes seconds).
        ids = [uuid.uuid4().hex + uuid.uuid4().hex[:8] for _ in self.sentinels]
        for i, port in enumerate(self.sentinels):
            conf = self.workdir / f"sentinel{i}.conf"
            peers = "".join(
                f"sentinel known-sentinel mymaster 127.0.0.1 {other} {ids[j]}\n"
                for j, other in enumerate(self.sentinels)
                if j != i
            )
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\nsentinel myid {ids[i]}\n"
                f"sentinel monitor mymaster 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds mymaster {self.down_after}\n"
                "sentinel failover-timeout mymaster 3000\n"
                "sentinel parallel-syncs mymaster 1\n"
                f"sentinel known-replica mymaster 127.0.0.1 {self.replica.port}\n" + peers
            )
            argv = ["redis-server", str(conf), "--sentinel"]
            self.procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))

        def ready() -> bool:
            # Each Sentinel must know the replica and the two other Sentinels to fail over.
            for port in self.sentinels:
                try:
                    client = redis.Redis(port=port, socket_connect_timeout=0.2)
                    master = client.sentinel_master("mymaster")
                except (redis.RedisError, KeyError):
                    return False
                if master["num-slaves"] < 1 or master["num-other-sentinels"] < 2:
                    return False
            return True

        if not wait_for(ready, 20.0, 0.1):
            self.stop()
            raise RuntimeError("sentinels did not discover each other")
        return self

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(5)
        self.procs = []
        self.master.stop()
        if self.replica is not None:
            self.replica.stop()

"""A Redis master dies under load: Redis Cluster (3 masters + 3 replicas) and Sentinel.

Each test runs a Flask service with the extension and a steady request loop over warm, cold,
never-granted and revoked users while one master is SIGKILLed, and checks that:

- no request is ever a wrong grant (a revoked or never-granted user answered 200),
- every status is 200, 403 or 503,
- the service answers from the promoted replica within the failover window plus 2 s, where
  "answers from the master" is a 200 for a user whose value only Redis holds (the fake IdP
  keeps a list of whom it was asked about, and such a request must not be in it),
- the invalidation subscriber is back on a live node: a revocation published after the
  failover reaches the service and the user is refused at once.

The servers start once per module on free loopback ports with short failure detection
(``cluster-node-timeout`` 1000 ms, ``down-after-milliseconds`` 1000) and are killed at the end.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import responses
from flask import Flask, jsonify

from flask_rbac_abac import RBACABAC, UserAttributes, requires_permission
from flask_rbac_abac.connection import close, connect
from flask_rbac_abac.keys import attributes_key
from flask_rbac_abac.model import Invalidation
from flask_rbac_abac.store import publish_invalidation, store_attributes
from tests.conftest import IDP, SERVICE, bearer, library_config
from tests.servers import Cluster, SentinelSet, wait_for

pytestmark = pytest.mark.timeout(60)

REDIS_ERRORS = (redis.RedisError, OSError)
#: How long after the promotion the service must answer from the new master.
MARGIN = 2.0
#: The longest a failover may take here before the test gives up.
WINDOW = 20.0
#: Seconds between two probes (a probe is a granted user only Redis knows, on the dead shard).
PROBE = 0.02


class Directory:
    """A fake IdP behind ``responses`` that writes Redis through the real store functions.

    Like the real IdP, it answers with the attributes even when Redis fails (it only reports
    ``cached: false``), so a Redis outage alone does not turn into 503s.
    """

    def __init__(self, mock: responses.RequestsMock, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.roles: dict[int, list[str]] = {}
        self.versions: Counter[int] = Counter()
        self.asked: set[int] = set()
        self.lock = threading.Lock()
        mock.add_callback("POST", IDP + "/api/refresh-user-cache/", callback=self._refresh)

    def attrs(self, user_id: int) -> UserAttributes:
        return UserAttributes(
            user_id=user_id,
            service_name=SERVICE,
            roles=self.roles[user_id],
            permissions=["invoice:read"] if self.roles[user_id] else [],
            version=self.versions[user_id],
        )

    def store(self, user_id: int) -> bool:
        try:
            store_attributes(self.client, self.attrs(user_id), 86400, self.prefix)
        except REDIS_ERRORS:
            return False
        return True

    def revoke(self, user_id: int) -> None:
        """Take the role away, write the new version, announce it (raising if Redis fails)."""
        self.roles[user_id] = []
        self.versions[user_id] += 1
        attrs = self.attrs(user_id)
        store_attributes(self.client, attrs, 86400, self.prefix)
        message = Invalidation(user_id=user_id, service_name=SERVICE, version=attrs.version)
        publish_invalidation(self.client, message, self.prefix)

    def _refresh(self, request: Any) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body)
        user_id = int(body["user_id"])
        with self.lock:
            self.asked.add(user_id)
        cached = self.store(user_id)
        attrs = self.attrs(user_id)
        answer = {"success": True, "user_id": user_id, "service_name": SERVICE,
                  "attributes": attrs.to_dict(), "version": attrs.version, "ttl": 86400,
                  "cached": cached}  # fmt: skip
        return 200, {}, json.dumps(answer)


def service(url: str, prefix: str) -> tuple[Flask, RBACABAC]:
    app = Flask("billing_api")
    app.config.update(
        library_config(
            prefix,
            RBAC_ABAC_REDIS_URL=url,
            RBAC_ABAC_INVALIDATION=True,
            RBAC_ABAC_LOCAL_CACHE_TTL=30,
        )
    )
    rbac = RBACABAC(app)

    @app.get("/invoices")
    @requires_permission("invoice:read")
    def invoices() -> Any:
        return jsonify(ok=True)

    return app, rbac


def replicated(master: int, replica: int) -> Callable[[], bool]:
    """True once ``replica`` has applied everything ``master`` has written so far."""
    target = redis.Redis(port=master).info("replication")["master_repl_offset"]

    def check() -> bool:
        info = redis.Redis(port=replica).info("replication")
        return int(info.get("slave_repl_offset", -1)) >= target

    return check


class Run:
    """The request loop, the kill, and what was seen."""

    def __init__(self, app: Flask, directory: Directory) -> None:
        self.http = app.test_client()
        self.directory = directory
        self.statuses: Counter[int] = Counter()
        self.wrong: list[tuple[int, int]] = []
        self.killed_at = 0.0
        self.promoted_at: float | None = None
        self.from_master_at: float | None = None

    def get(self, user_id: int, granted: bool) -> int:
        status = self.http.get("/invoices", headers=bearer(user_id)).status_code
        self.statuses[status] += 1
        if (status == 200 and not granted) or status not in (200, 403, 503):
            self.wrong.append((user_id, status))
        return status

    def loop(
        self,
        warm: list[int],
        denied: list[int],
        cold: Iterator[int],
        probes: Iterator[int],
        kill: Callable[[], None],
        promoted: Callable[[], bool],
    ) -> None:
        """Requests until the service answered from the new master (or ``WINDOW`` passed)."""
        start = time.monotonic()
        watcher = threading.Thread(target=self._watch, args=(promoted,), daemon=True)
        i = 0
        probed = 0.0
        while time.monotonic() - start < WINDOW + 5:
            if i == 20:
                kill()
                self.killed_at = time.monotonic()
                watcher.start()
            self.get(warm[i % len(warm)], granted=True)
            self.get(denied[i % len(denied)], granted=False)
            uid = next(cold)
            self.get(uid, granted=bool(self.directory.roles[uid]))
            if self.killed_at and self.from_master_at is None and time.monotonic() > probed + PROBE:
                probed = time.monotonic()
                probe = next(probes)
                if self.get(probe, granted=True) == 200 and probe not in self.directory.asked:
                    self.from_master_at = time.monotonic()
            if self.from_master_at and time.monotonic() - self.from_master_at > 1.0:
                break
            i += 1
        watcher.join(WINDOW)

    def _watch(self, promoted: Callable[[], bool]) -> None:
        if wait_for(promoted, WINDOW, 0.02):
            self.promoted_at = time.monotonic()

    def report(self, name: str) -> str:
        assert self.promoted_at is not None, "the replica was never promoted"
        assert self.from_master_at is not None, "the service never answered from the new master"
        return (
            f"{name}: promoted {self.promoted_at - self.killed_at:.2f} s after the kill, "
            f"first answer from the new master at {self.from_master_at - self.killed_at:.2f} s; "
            f"statuses {dict(sorted(self.statuses.items()))}"
        )


def scenario(
    url: str,
    key_prefix: str,
    on_killed_shard: Callable[[str], bool],
    settle: Callable[[], None],
    kill: Callable[[], None],
    promoted: Callable[[], bool],
    name: str,
) -> None:
    """The whole failover test, the same for both topologies."""
    writer = connect(url, timeout=0.5)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        directory = Directory(mock, writer, key_prefix)
        for uid in range(1, 9000):
            directory.roles[uid] = ["viewer"] if uid % 2 else []
        warm = list(range(1, 40, 2))
        denied = list(range(2, 40, 2))
        revoked = [41, 43, 45]
        late = 47  # revoked after the failover: the invalidation must still arrive
        cold = iter(range(101, 2000))
        key = lambda uid: attributes_key(key_prefix, SERVICE, uid)  # noqa: E731
        # Probes: granted users that Redis alone knows, on the shard that dies.
        probes = [u for u in range(2001, 9000, 2) if on_killed_shard(key(u))][:1200]
        for uid in probes:
            assert directory.store(uid)
        app, rbac = service(url, key_prefix)
        with app.app_context():
            library = rbac.client
        run = Run(app, directory)
        try:
            for uid in [*warm, *denied, *revoked, late]:
                run.get(uid, granted=uid % 2 == 1)
            subscriber = library.subscriber
            assert subscriber is not None and subscriber.wait_until_subscribed(5)
            for uid in revoked:
                directory.revoke(uid)
            assert wait_for(lambda: subscriber.messages >= len(revoked), 5)
            settle()
            directory.asked.clear()
            run.loop([*warm, late], denied + revoked, cold, iter(probes), kill, promoted)
            print(run.report(name))
            assert run.wrong == []
            assert run.from_master_at - run.promoted_at <= MARGIN  # type: ignore[operator]
            # The subscriber is listening again (on a live node): a revocation reaches it.
            assert wait_for(lambda: subscriber.connected, 5)
            assert run.get(late, granted=True) == 200
            seen = subscriber.messages
            directory.roles[late] = ["viewer"]
            directory.revoke(late)
            assert wait_for(lambda: subscriber.messages > seen, 5)
            assert run.get(late, granted=False) == 403
            assert run.wrong == []
        finally:
            library.close()
            close(writer)


def test_cluster_master_killed(ha_cluster: Cluster, key_prefix: str) -> None:
    client = connect(ha_cluster.url, timeout=0.5)
    # Kill the master the subscriber listens on: the channel's slot owner.
    victim = client.get_node_from_key(f"{key_prefix}:invalidate").port
    replica = ha_cluster.replica_of(victim)
    try:
        scenario(
            ha_cluster.url,
            key_prefix,
            lambda key: bool(client.get_node_from_key(key).port == victim),
            lambda: assert_true(wait_for(replicated(victim, replica), 5)),
            ha_cluster.node(victim).kill,
            lambda: ha_cluster.promoted(replica),
            "cluster",
        )
    finally:
        close(client)


def test_sentinel_master_killed(sentinel_set: SentinelSet, key_prefix: str) -> None:
    master = sentinel_set.master
    assert sentinel_set.replica is not None and sentinel_set.master_port() == master.port
    replica = sentinel_set.replica.port
    scenario(
        sentinel_set.url,
        key_prefix,
        lambda key: True,
        lambda: assert_true(wait_for(replicated(master.port, replica), 5)),
        master.kill,
        sentinel_set.promoted,
        "sentinel",
    )


def assert_true(value: bool) -> None:
    assert value

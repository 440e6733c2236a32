"""The IdP on Redis Cluster and on Sentinel: it writes values, its invalidations reach a library
subscriber, and both keep working after the master holding them is SIGKILLed.

Each topology gets its own servers for this module (a 3 + 3 cluster, a master + replica + 3
Sentinels) with failure detection in about a second.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from flask_rbac_abac import UserAttributes
from flask_rbac_abac.connection import close, connect
from flask_rbac_abac.invalidation import Subscriber
from flask_rbac_abac.keys import attributes_key, invalidation_channel
from flask_rbac_abac.model import Invalidation
from tests.servers import wait_for

from .conftest import Api

pytestmark = pytest.mark.timeout(60)

#: The longest a failover may take here; then the IdP must be right within ``MARGIN``.
WINDOW = 20.0
MARGIN = 2.0


@dataclass
class Topology:
    url: str
    prefix: str
    kill: Callable[[], None]
    promoted: Callable[[], bool]


def _cluster(ha_cluster: Any) -> Topology:
    """Pick a prefix whose channel and user 1's key live on one shard, and kill its master."""
    client = connect(ha_cluster.url, timeout=0.5)
    try:
        while True:
            prefix = "t" + uuid.uuid4().hex[:12]
            node = client.get_node_from_key(invalidation_channel(prefix))
            key = attributes_key(prefix, "billing_api", 1)
            if client.get_node_from_key(key).name == node.name:
                break
    finally:
        close(client)
    replica = ha_cluster.replica_of(node.port)
    return Topology(
        ha_cluster.url,
        prefix,
        ha_cluster.node(node.port).kill,
        lambda: ha_cluster.promoted(replica),
    )


@pytest.fixture(params=["cluster", "sentinel"])
def topology(request: pytest.FixtureRequest) -> Topology:
    if request.param == "cluster":
        return _cluster(request.getfixturevalue("ha_cluster"))
    sentinels = request.getfixturevalue("sentinel_set")
    prefix = "t" + uuid.uuid4().hex[:12]
    return Topology(sentinels.url, prefix, sentinels.master.kill, sentinels.promoted)


@pytest.fixture
def listener(topology: Topology) -> Iterator[tuple[Subscriber, list[Invalidation]]]:
    """The library's own invalidation subscriber, as a service process runs it."""
    received: list[Invalidation] = []
    subscriber = Subscriber(
        lambda: connect(topology.url, timeout=0.5, retries=0),
        topology.prefix,
        on_message=received.append,
        on_connect=lambda: None,
    )
    subscriber.ensure_started()
    assert subscriber.wait_until_subscribed(5)
    yield subscriber, received
    subscriber.stop()


def test_idp_writes_publishes_and_survives_a_failover(
    topology: Topology,
    listener: tuple[Subscriber, list[Invalidation]],
    make_app: Callable[..., Any],
    sqlite_url: str,
) -> None:
    subscriber, received = listener
    app = make_app(
        sqlite_url, RBAC_ABAC_REDIS_URL=topology.url, RBAC_ABAC_KEY_PREFIX=topology.prefix
    )
    api = Api(app.test_client())
    reader = connect(topology.url, timeout=0.5)
    key = attributes_key(topology.prefix, "billing_api", 1)

    def cached() -> UserAttributes | None:
        raw = reader.get(key)
        return None if raw is None else UserAttributes.from_json(raw)

    try:
        api.service()
        uid = api.user("alice")
        assert uid == 1
        api.roles(uid, ["viewer"])
        value = cached()
        assert value is not None and value.roles == ("viewer",) and value.version == 1
        assert wait_for(lambda: len(received) == 1, 5)
        assert received == [Invalidation(user_id=1, service_name="billing_api", version=1)]

        topology.kill()
        killed_at = time.monotonic()
        # Keep changing the user's roles: every change answers 200 (the database is the truth,
        # Redis is best effort) until Redis holds the change and the subscriber has heard it.
        promoted_at: float | None = None
        caught_up_at: float | None = None
        roles = ["viewer", "accountant"]
        version = 1
        while time.monotonic() - killed_at < WINDOW + MARGIN:
            version += 1
            body = api.roles(uid, [roles[version % 2]])  # asserts 200
            assert body["roles"] == [roles[version % 2]]
            if promoted_at is None and topology.promoted():
                promoted_at = time.monotonic()
            try:
                value = cached()
            except Exception:  # Redis is failing over
                value = None
            heard = [m.version for m in received]
            if value is not None and value.version == version and version in heard:
                caught_up_at = time.monotonic()
                break
            time.sleep(0.05)
        if promoted_at is None:
            assert wait_for(topology.promoted, 1.0)
            promoted_at = time.monotonic()
        assert caught_up_at is not None, "the IdP never wrote and published through the failover"
        print(
            f"IdP on {topology.url.split(':')[0]}: promoted {promoted_at - killed_at:.2f} s, "
            f"written and heard {caught_up_at - killed_at:.2f} s after the kill"
        )
        assert caught_up_at - promoted_at <= MARGIN
        assert subscriber.connects >= 2
        assert value is not None and value.roles == (roles[version % 2],)
        # And afterwards, business as usual.
        received.clear()
        api.roles(uid, ["admin"])
        value = cached()
        assert value is not None and value.roles == ("admin",) and value.version == version + 1
        assert wait_for(lambda: len(received) == 1, 5)
        assert received == [
            Invalidation(user_id=1, service_name="billing_api", version=version + 1)
        ]
    finally:
        close(reader)

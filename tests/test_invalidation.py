"""The invalidation subscriber on a real Redis: eviction, reconnect flush, fork safety."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator

import pytest
import redis

from flask_rbac_abac import RedisAttributeClient, UserAttributes
from flask_rbac_abac.model import Invalidation
from flask_rbac_abac.store import publish_invalidation

from .conftest import REDIS_URL, SERVICE
from .servers import RedisServer, require_redis_server, wait_for


def attrs(user_id: int, version: int = 1, service: str = SERVICE) -> UserAttributes:
    return UserAttributes(user_id=user_id, service_name=service, roles=["admin"], version=version)


@pytest.fixture
def listening(real_redis, key_prefix) -> Iterator[RedisAttributeClient]:
    client = RedisAttributeClient(REDIS_URL, service_name=SERVICE, key_prefix=key_prefix)
    client.listen()
    assert client.subscriber.wait_until_subscribed(2.0)
    yield client
    client.close()


def test_message_evicts_matching_entry_only(listening, real_redis, key_prefix) -> None:
    listening.set_user_attributes(attrs(1))
    listening.set_user_attributes(attrs(2))
    publish_invalidation(real_redis, Invalidation(1, SERVICE, 2), key_prefix)
    assert wait_for(lambda: listening.local.get((SERVICE, 1)) is None)
    assert listening.local.get((SERVICE, 2)) is not None
    assert listening.stats()["invalidations"] == 1
    assert listening.health_check()["subscriber"] == "ok"
    state = listening.subscriber.state()
    assert state["connected"] is True and state["messages"] == 1


def test_older_version_message_keeps_newer_entry(listening, real_redis, key_prefix) -> None:
    listening.set_user_attributes(attrs(1, version=5))
    publish_invalidation(real_redis, Invalidation(1, SERVICE, 4), key_prefix)
    assert wait_for(lambda: listening.stats()["invalidations"] == 1)
    assert listening.local.get((SERVICE, 1)) is not None


def test_all_services_message(listening, real_redis, key_prefix) -> None:
    listening.set_user_attributes(attrs(1))
    listening.set_user_attributes(attrs(1, service="other_api"))
    publish_invalidation(real_redis, Invalidation(1, None, None), key_prefix)
    assert wait_for(lambda: len(listening.local) == 0)


def test_a_gone_message_denies_without_asking_the_idp_until_a_value_returns(
    real_redis, key_prefix
) -> None:
    asked = []
    client = RedisAttributeClient(REDIS_URL, service_name=SERVICE, key_prefix=key_prefix)
    client.idp.refresh = lambda *a: asked.append(a) or attrs(1)  # type: ignore[method-assign]
    try:
        client.listen()
        assert client.subscriber.wait_until_subscribed(2.0)
        client.set_user_attributes(attrs(1, version=3))
        real_redis.delete(client.key(1))  # the IdP removed her last role: her entry went
        publish_invalidation(real_redis, Invalidation(1, SERVICE, None, gone=True), key_prefix)
        assert wait_for(lambda: client.stats()["invalidations"] == 1)
        assert client.get_user_attributes(1) is None  # unknown: 403 unknown_user
        assert asked == [] and client.stats()["unknown_hits"] == 1
        client.set_user_attributes(attrs(1, version=4))  # granted again: a value wins at once
        assert client.get_user_attributes(1).version == 4
    finally:
        client.close()


def test_a_gone_message_for_another_service_or_user_keeps_the_entry(
    listening, real_redis, key_prefix
) -> None:
    listening.set_user_attributes(attrs(1))
    publish_invalidation(real_redis, Invalidation(2, SERVICE, None, gone=True), key_prefix)
    publish_invalidation(real_redis, Invalidation(1, "other_api", None, gone=True), key_prefix)
    assert wait_for(lambda: listening.stats()["invalidations"] == 2)
    assert listening.local.get((SERVICE, 1)) is not None
    assert not listening.local.is_unknown((SERVICE, 1))


def test_malformed_messages_are_ignored(listening, real_redis, key_prefix) -> None:
    listening.set_user_attributes(attrs(1))
    real_redis.publish(f"{key_prefix}:invalidate", b"\x80not json")
    publish_invalidation(real_redis, Invalidation(2, SERVICE, None), key_prefix)
    assert wait_for(lambda: listening.stats()["invalidations"] == 1)
    assert listening.local.get((SERVICE, 1)) is not None
    assert listening.subscriber.state()["connected"] is True


def test_revocation_reaches_another_process_cache_within_a_second(real_redis, key_prefix) -> None:
    """Two clients stand for two service processes sharing Redis."""
    reader = RedisAttributeClient(REDIS_URL, service_name=SERVICE, key_prefix=key_prefix)
    writer = RedisAttributeClient(
        REDIS_URL, service_name=SERVICE, key_prefix=key_prefix, invalidation=False
    )
    try:
        reader.listen()
        assert reader.subscriber.wait_until_subscribed(2.0)
        writer.set_user_attributes(attrs(1))
        assert reader.get_user_attributes(1, auto_refresh=False).roles == ("admin",)
        started = time.monotonic()
        writer.invalidate(1)
        assert wait_for(lambda: reader.get_user_attributes(1, auto_refresh=False) is None, 1.0)
        assert time.monotonic() - started < 1.0
    finally:
        reader.close()
        writer.close()


@pytest.fixture
def own_redis(tmp_path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, so it can be killed and restarted."""
    require_redis_server()
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def test_redis_restart_flushes_l1_and_resubscribes(own_redis) -> None:
    url = own_redis.url
    client = RedisAttributeClient(url, service_name=SERVICE)
    try:
        client.listen()
        assert client.subscriber.wait_until_subscribed(2.0)
        client.set_user_attributes(attrs(1))
        assert client.local.get((SERVICE, 1)) is not None
        own_redis.stop()
        assert wait_for(lambda: client.subscriber.state()["connected"] is False, 3.0)
        own_redis.start()
        # Messages sent while it was away are lost, so the whole L1 goes on reconnect.
        assert wait_for(lambda: client.subscriber.state()["connects"] == 2, 5.0)
        assert client.local.get((SERVICE, 1)) is None
        client.set_user_attributes(attrs(1, version=2))
        publish_invalidation(redis.Redis.from_url(url), Invalidation(1, SERVICE, 3), "rbac_abac")
        assert wait_for(lambda: client.local.get((SERVICE, 1)) is None)
        assert client.health_check()["subscriber"] == "ok"
    finally:
        client.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_subscriber_restarts_in_a_forked_child(listening) -> None:
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a threaded process; gunicorn forks just so.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            before = listening.subscriber.state()["alive"]
            listening.listen()
            ok = listening.subscriber.wait_until_subscribed(2.0)
            os.write(write, f"{before},{ok}".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 100) == b"False,True"
    os.close(read)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_first_lookup_in_a_forked_child_starts_its_subscriber(listening) -> None:
    """A standalone client started before a fork: the child's first lookup restarts it."""
    listening.set_user_attributes(attrs(1))
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            before = listening.subscriber.state()["alive"]
            listening.get_user_attributes(1)  # no listen() call
            ok = listening.subscriber.wait_until_subscribed(2.0)
            os.write(write, f"{before},{ok}".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 100) == b"False,True"
    os.close(read)

"""RedisAttributeClient: the lookup path, parametrised over fakeredis and the real Redis."""

from __future__ import annotations

import re
import threading
import time
from unittest import mock

import pytest
import requests
import responses

from flask_rbac_abac import (
    AttributesUnavailable,
    IdentityProviderError,
    InvalidKeyPart,
    RedisAttributeClient,
    UserAttributes,
)
from flask_rbac_abac.keys import lease_key
from flask_rbac_abac.model import Invalidation
from flask_rbac_abac.singleflight import Lease

from .conftest import IDP, SERVICE
from .servers import wait_for

REFRESH = IDP + "/api/refresh-user-cache/"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_client(backend, key_prefix):
    made = []

    def make(**kwargs) -> RedisAttributeClient:
        kwargs.setdefault("service_name", SERVICE)
        kwargs.setdefault("identity_provider_url", IDP)
        kwargs.setdefault("key_prefix", key_prefix)
        kwargs.setdefault("invalidation", False)
        kwargs.setdefault("redis", backend)
        client = RedisAttributeClient(**kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def attrs(user_id: int = 7, version: int = 1, **fields) -> UserAttributes:
    fields.setdefault("roles", ["viewer"])
    return UserAttributes(user_id=user_id, service_name=SERVICE, version=version, **fields)


def test_set_uses_default_ttl_of_a_day(make_client, backend) -> None:
    client = make_client()
    assert client.ttl == 86400
    assert client.set_user_attributes(attrs()) is True
    assert 86390 <= backend.ttl(client.key(7)) <= 86400
    client.set_user_attributes(attrs(version=2), ttl=120)
    assert 0 < backend.ttl(client.key(7)) <= 120


def test_auto_refresh_on_miss(make_client, idp) -> None:
    idp.add(7, roles=["admin"], permissions=["invoice:read"], attributes={"clearance": 3})
    client = make_client(service_token="svc-token")
    got = client.get_user_attributes(7)
    assert got is not None and got.roles == ("admin",) and got.get("clearance") == 3
    assert len(idp.requests) == 1
    assert idp.requests[0] == {
        "body": {"user_id": 7, "service_name": SERVICE},
        "auth": "Bearer svc-token",
    }
    # The value is the IdP's answer (Redis and its TTL are the IdP's writes, tested on the IdP).
    answered = UserAttributes(
        user_id=7,
        service_name=SERVICE,
        roles=["admin"],
        permissions=["invoice:read"],
        attributes={"clearance": 3},
        fetched_at=got.fetched_at,  # stamped by the fake IdP when it answered
    )
    assert got == answered
    assert client.get_user_attributes(7) == got
    assert len(idp.requests) == 1
    stats = client.stats()
    assert stats["auto_refreshes"] == 1 and stats["l1_hits"] == 1 and stats["l2_misses"] == 1


def test_l2_hit_fills_l1_and_l1_hit_does_no_redis_call(make_client, backend) -> None:
    writer = make_client()
    writer.set_user_attributes(attrs(roles=["accountant"]))
    client = make_client()
    assert client.get_user_attributes(7).roles == ("accountant",)
    assert client.stats()["l2_hits"] == 1
    with mock.patch.object(backend, "get", side_effect=AssertionError("Redis was called")):
        with mock.patch.object(backend, "execute_command", side_effect=AssertionError("I/O")):
            assert client.get_user_attributes(7).roles == ("accountant",)
    assert client.stats()["l1_hits"] == 1
    with mock.patch.object(backend, "get", side_effect=AssertionError("Redis was called")):
        assert client.get_user_attributes("7").roles == ("accountant",)  # same entry as 7
    assert client.stats()["l1_hits"] == 2 and client.stats()["l1_misses"] == 1


def test_auto_refresh_false_returns_none_without_calling_the_idp(make_client, idp) -> None:
    idp.add(7)
    client = make_client()
    assert client.get_user_attributes(7, auto_refresh=False) is None
    assert idp.requests == []
    disabled = make_client(auto_refresh=False)
    assert disabled.get_user_attributes(7) is None
    assert idp.requests == []


def test_unknown_user_at_the_idp_is_none(make_client, idp) -> None:
    client = make_client()
    assert client.get_user_attributes(99) is None
    assert client.stats()["idp_not_found"] == 1


def test_corrupt_value_is_a_miss_and_gets_overwritten(make_client, backend, idp) -> None:
    idp.add(7, roles=["viewer"])
    client = make_client()
    backend.set(client.key(7), b"\x80\x04\x95pickle-bytes")
    got = client.get_user_attributes(7)
    assert got is not None and got.roles == ("viewer",)
    assert client.stats()["decode_errors"] == 1
    assert UserAttributes.from_json(backend.get(client.key(7))) == got


def test_value_of_another_key_is_a_miss(make_client, backend, idp) -> None:
    idp.add(7, roles=["viewer"])
    client = make_client()
    backend.set(client.key(7), attrs(user_id=8, roles=["admin"]).to_json())
    assert client.get_user_attributes(7).roles == ("viewer",)


def test_invalid_key_parts_are_refused_before_any_io(make_client, idp) -> None:
    client = make_client()
    with pytest.raises(InvalidKeyPart):
        client.get_user_attributes("1*")
    with pytest.raises(InvalidKeyPart):
        client.get_user_attributes(1, service_name="billing:*")
    with pytest.raises(InvalidKeyPart):
        client.get_user_attributes(["not", "hashable"])  # type: ignore[arg-type]
    assert idp.requests == []


@pytest.mark.parametrize(
    "answer, message",
    [
        ({"status": 500, "json": {"success": False}}, "identity provider answered 500"),
        ({"body": requests.ConnectTimeout("slow")}, "unreachable at http://idp.test"),
        ({"body": requests.ReadTimeout("slow")}, "unreachable"),
        ({"status": 200, "body": "<html>"}, "answered 200 without JSON"),
        ({"status": 200, "json": ["x"]}, "non-object"),
        ({"status": 200, "json": {"success": True, "attributes": {"schema": 9}}}, "bad attributes"),
        (
            {"status": 302, "headers": {"Location": "http://evil.test/"}},
            "answered a redirect (302)",
        ),
        (
            {"status": 404, "json": {"success": False, "error": "service 'x' is not registered"}},
            "service 'x' is not registered",
        ),
        ({"status": 401, "json": {"success": False, "error": "bad token"}}, "bad token"),
    ],
)
def test_idp_failures_are_unavailable(make_client, answer, message) -> None:
    client = make_client()
    with responses.RequestsMock() as mock_idp:
        mock_idp.add("POST", REFRESH, **answer)
        # Callers catch AttributesUnavailable (the 503 path); the IdP's failure is one of them.
        with pytest.raises(AttributesUnavailable, match=re.escape(message)) as raised:
            client.get_user_attributes(7)
        assert len(mock_idp.calls) == 1
    assert type(raised.value) is IdentityProviderError
    assert client.stats()["idp_errors"] == 1


def test_idp_answer_for_another_user_is_refused(make_client) -> None:
    client = make_client()
    with responses.RequestsMock() as mock_idp:
        body = {"success": True, "attributes": attrs(user_id=8).to_dict()}
        mock_idp.add("POST", REFRESH, json=body)
        with pytest.raises(IdentityProviderError, match="another user"):
            client.get_user_attributes(7)


def test_idp_calls_use_explicit_timeouts_and_no_redirects(make_client) -> None:
    session = mock.Mock(spec=requests.Session)
    session.post.side_effect = requests.ConnectionError("down")
    client = make_client(session=session, idp_timeout=(0.2, 1.5))
    with pytest.raises(IdentityProviderError):
        client.get_user_attributes(7)
    kwargs = session.post.call_args.kwargs
    assert kwargs["timeout"] == (0.2, 1.5) and kwargs["allow_redirects"] is False


def test_circuit_breaker_opens_and_recovers(make_client, idp) -> None:
    clock = Clock()
    client = make_client(timer=clock)
    idp.add(7)
    with responses.RequestsMock() as failing:
        failing.add("POST", REFRESH, status=503)
        for _ in range(3):
            with pytest.raises(IdentityProviderError, match="answered 503"):
                client.get_user_attributes(7)
        assert len(failing.calls) == 3
        with pytest.raises(IdentityProviderError, match="circuit breaker is open"):
            client.get_user_attributes(7)
        assert len(failing.calls) == 3  # the open breaker answered without calling the IdP
    assert client.stats()["breaker"] == "open"
    clock.now += 2.5
    assert client.get_user_attributes(7) is not None
    assert client.stats()["breaker"] == "closed"


def test_stale_if_error_within_bound(make_client, backend, idp) -> None:
    clock = Clock()
    client = make_client(timer=clock, local_cache_ttl=60, max_stale=300)
    idp.add(7, roles=["admin"])
    assert client.get_user_attributes(7).roles == ("admin",)
    backend.delete(client.key(7))
    clock.now += 120  # past freshness, within the stale bound
    with responses.RequestsMock() as failing:
        failing.add("POST", REFRESH, status=500)
        assert client.get_user_attributes(7).roles == ("admin",)
        assert client.stats()["stale_served"] == 1
        clock.now += 300  # past the bound: unknown, so unavailable
        with pytest.raises(AttributesUnavailable):
            client.get_user_attributes(7)


def test_no_stale_serving_when_disabled(make_client, backend, idp) -> None:
    clock = Clock()
    client = make_client(timer=clock, local_cache_ttl=60, max_stale=0)
    idp.add(7)
    client.get_user_attributes(7)
    backend.delete(client.key(7))
    clock.now += 61
    with responses.RequestsMock() as failing:
        failing.add("POST", REFRESH, status=500)
        with pytest.raises(AttributesUnavailable):
            client.get_user_attributes(7)


def test_single_flight_calls_the_idp_once_for_concurrent_misses(make_client, idp) -> None:
    idp.add(7, roles=["admin"])
    original = idp._refresh

    def slow(request):
        # The leader's refresh holds until the seven others are waiting on it: no timing window.
        deadline = time.monotonic() + 30
        while client.stats()["refresh_waits"] < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
        return original(request)

    idp._refresh = slow
    with responses.RequestsMock() as mock_idp:
        mock_idp.add_callback("POST", REFRESH, callback=lambda r: idp._refresh(r))
        client = make_client()
        results = []
        threads = [
            threading.Thread(target=lambda: results.append(client.get_user_attributes(7)))
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)
        assert len(mock_idp.calls) == 1
    assert len(results) == 8 and all(r.roles == ("admin",) for r in results)
    assert client.stats()["refresh_waits"] == 7


def test_cross_process_lease_waits_for_the_holders_result(make_client, backend, idp) -> None:
    idp.add(7, roles=["fresh"])
    client = make_client()
    other_process = make_client()
    backend.set(lease_key(client.key_prefix, SERVICE, 7), "someone-else", px=5000)
    timer = threading.Timer(0.15, other_process.set_user_attributes, [attrs(roles=["theirs"])])
    timer.start()
    try:
        assert client.get_user_attributes(7).roles == ("theirs",)
    finally:
        timer.cancel()
    assert idp.requests == []


def test_lease_released_after_refresh(make_client, backend, idp) -> None:
    idp.add(7)
    client = make_client()
    client.get_user_attributes(7)
    assert backend.get(lease_key(client.key_prefix, SERVICE, 7)) is None


def test_waiters_on_a_lease_share_its_holders_failure(make_client, backend) -> None:
    waiter = make_client()
    lease = lease_key(waiter.key_prefix, SERVICE, 7)
    holder = Lease(backend, lease, ttl=5)  # "another process" is refreshing user 7
    assert holder.acquire_or_wait(lambda: (None, True)) is None and holder.held
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock_idp:
        mock_idp.add("POST", REFRESH, status=503)
        failing = threading.Timer(0.15, holder.release, kwargs={"failed": True})
        failing.start()
        try:
            with pytest.raises(IdentityProviderError) as raised:
                waiter.get_user_attributes(7)
        finally:
            failing.cancel()
        assert raised.value.reason == "peer_failed"
        assert len(mock_idp.calls) == 0  # the holder's failure was shared, not repeated
        assert backend.get(lease) in (b"!failed", "!failed")
        # A lookup that arrives after the failure, and so waited on nobody, tries again.
        with pytest.raises(IdentityProviderError, match="answered 503"):
            waiter.get_user_attributes(7)
        assert len(mock_idp.calls) == 1


def test_invalidate_deletes_everywhere_and_announces(make_client, backend) -> None:
    client = make_client()
    client.set_user_attributes(attrs())
    pubsub = backend.pubsub()
    pubsub.subscribe(f"{client.key_prefix}:invalidate")
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"
    client.invalidate(7)
    assert backend.get(client.key(7)) is None
    assert client.get_user_attributes(7, auto_refresh=False) is None
    message = pubsub.get_message(timeout=1)
    assert message["type"] == "message"
    assert b'"user_id":7' in message["data"] and b'"service_name":"billing_api"' in message["data"]
    pubsub.close()


def test_manual_refresh(make_client, idp) -> None:
    idp.add(7, roles=["viewer"])
    client = make_client()
    assert client.get_user_attributes(7).roles == ("viewer",)
    idp.add(7, roles=["admin"], version=2)
    refreshed = client.refresh_user_attributes_from_identity_provider(7)
    assert refreshed.roles == ("admin",)
    assert client.get_user_attributes(7).roles == ("admin",)
    assert client.stats()["manual_refreshes"] == 1
    assert client.refresh_user_attributes_from_identity_provider(8) is None


def test_health_check_answers_from_what_it_has_seen(make_client) -> None:
    client = make_client()
    # Nothing seen yet: never claimed ok. Asking starts probes; it does not wait for them.
    with responses.RequestsMock() as mock_idp:
        mock_idp.add("GET", IDP + "/healthz", json={"ok": True})
        assert client.health_check()["idp"] == "degraded"
        ok = {"status": "ok", "redis": "ok", "idp": "ok"}
        assert wait_for(lambda: client.health_check() == ok)
    with responses.RequestsMock() as mock_idp:
        mock_idp.add("GET", IDP + "/healthz", body=requests.ConnectionError("down"))
        assert client.health.probe("idp") is False
    assert client.health_check() == {"status": "degraded", "redis": "ok", "idp": "degraded"}


def test_health_follows_the_request_path(make_client) -> None:
    client = make_client()
    unknown = {"success": False, "error": "user 8 not found", "code": "user_not_found"}
    with responses.RequestsMock() as mock_idp:
        mock_idp.add("POST", REFRESH, status=502)
        with pytest.raises(AttributesUnavailable):
            client.get_user_attributes(7)
        assert client.health.state("redis") == "ok"
        assert client.health.state("idp") == "degraded"
        mock_idp.add("POST", REFRESH, status=404, json=unknown)
        assert client.get_user_attributes(8) is None
        assert client.health.state("idp") == "ok"


def test_redis_down_goes_to_the_idp_quickly(free_port, idp, key_prefix) -> None:
    idp.add(7, roles=["admin"])
    client = RedisAttributeClient(
        f"redis://127.0.0.1:{free_port}/0",
        service_name=SERVICE,
        identity_provider_url=IDP,
        key_prefix=key_prefix,
        invalidation=False,
    )
    try:
        started = time.perf_counter()
        assert client.get_user_attributes(7).roles == ("admin",)
        assert time.perf_counter() - started < 1.0
        assert client.stats()["redis_errors"] >= 1
        assert client.health_check()["redis"] == "degraded"
    finally:
        client.close()


def test_redis_and_idp_down_is_unavailable_fast(free_port, key_prefix) -> None:
    client = RedisAttributeClient(
        f"redis://127.0.0.1:{free_port}/0",
        service_name=SERVICE,
        identity_provider_url=f"http://127.0.0.1:{free_port}",
        key_prefix=key_prefix,
        invalidation=False,
    )
    try:
        started = time.perf_counter()
        with pytest.raises(AttributesUnavailable):
            client.get_user_attributes(7)
        assert time.perf_counter() - started < 1.0
    finally:
        client.close()


def test_unknown_user_is_remembered_briefly(make_client, backend, idp) -> None:
    clock = Clock()
    client = make_client(timer=clock)
    assert client.get_user_attributes(42) is None
    assert client.get_user_attributes(42) is None  # a deactivated user's token, again
    assert len(idp.requests) == 1
    assert client.stats()["unknown_hits"] == 1
    clock.now += 6  # past the 5 s memory: ask again
    assert client.get_user_attributes(42) is None
    assert len(idp.requests) == 2


def test_unknown_user_who_gets_a_role_is_seen_at_once(make_client, backend, idp) -> None:
    client = make_client()
    assert client.get_user_attributes(42) is None
    # The IdP assigns a role: it writes Redis (seen even if the invalidation were lost) ...
    make_client().set_user_attributes(attrs(user_id=42, roles=["viewer"]))
    assert client.get_user_attributes(42).roles == ("viewer",)
    # ... and an invalidation alone also ends the memory.
    assert client.get_user_attributes(43) is None
    client._on_invalidation(Invalidation(43, SERVICE, 1))
    idp.add(43, roles=["admin"])
    assert client.get_user_attributes(43).roles == ("admin",)
    assert len(idp.requests) == 3


def test_invalidation_during_the_redis_read_never_lands_the_old_value_in_l1(
    make_client, backend
) -> None:
    """The revocation-vs-refresh race at the client level: a lookup reads the old value from
    Redis, the IdP revokes and announces while that read is in flight, then the lookup stores
    what it read. The old value must not reach L1 (the ticket is taken before the read)."""
    client = make_client()
    writer = make_client()
    writer.set_user_attributes(attrs(version=1, roles=["admin"]))
    key = (SERVICE, 7)
    assert client.local.get(key) is None
    read_done = threading.Event()
    release = threading.Event()
    real_get = backend.get

    def slow_get(name):
        value = real_get(name)
        if name == client.key(7):
            read_done.set()
            assert release.wait(5)
        return value

    results = []
    with mock.patch.object(backend, "get", side_effect=slow_get):
        reader = threading.Thread(target=lambda: results.append(client.get_user_attributes(7)))
        reader.start()
        assert read_done.wait(5)
        # The IdP's revocation: a newer value in Redis, then the announcement.
        assert writer.set_user_attributes(attrs(version=2, roles=[])) is True
        client._on_invalidation(Invalidation(7, SERVICE, 2))
        release.set()
        reader.join(5)
    assert not reader.is_alive()
    assert results and results[0].version == 1  # that request read before the change
    assert client.local.get(key) is None  # but the old value was refused by L1
    after = client.get_user_attributes(7)
    assert after is not None and after.version == 2 and after.roles == ()
    assert client.local.get(key) == after

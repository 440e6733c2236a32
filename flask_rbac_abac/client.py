"""``RedisAttributeClient``: attributes through L1 (in process) -> L2 (Redis) -> the IdP.

The lookup path, in order:

1. L1 fresh hit: no I/O at all.
2. L2 (one ``GET``): decoded and validated; a value that fails to decode is a miss.
3. Miss with auto-refresh: one caller per key asks the IdP (single-flight in this process, a
   short Redis lease across processes); the IdP writes Redis and answers with the value.
4. The IdP failed: a stale L1 value no older than ``max_stale`` past its freshness is served,
   flagged and counted; otherwise :class:`AttributesUnavailable` (the caller answers 503).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import requests
from redis.exceptions import RedisClusterException, RedisError

from . import signals
from .codec import ValueKeys, decode_value
from .config import DEFAULT_CACHE_TTL, DEFAULT_IDP_URL, DEFAULT_REDIS_URL
from .connection import DEFAULT_TIMEOUT, connect
from .connection import close as close_redis
from .errors import AttributesUnavailable, DecodeError, IdentityProviderError
from .health import DEGRADED, OK, HealthState
from .idp import CircuitBreaker, IdentityProviderClient
from .invalidation import Subscriber
from .keys import DEFAULT_KEY_PREFIX, attributes_key, lease_key, validate_prefix
from .local_cache import Key, LocalCache, Ticket
from .metrics import Stats
from .model import Invalidation, UserAttributes, validate_service_name, validate_user_id
from .store import delete_attributes, publish_invalidation, store_attributes

log = logging.getLogger(__name__)

REDIS_ERRORS = (RedisError, RedisClusterException, OSError)
LEASE_POLL = 0.02
#: What a lease holder whose refresh failed leaves in the lease, and for how long (ms): the
#: processes waiting on it fail with it instead of each sending the IdP one more call.
LEASE_FAILED = "!failed"
LEASE_FAILED_MS = 1000
_FAILED_VALUES = (LEASE_FAILED, LEASE_FAILED.encode())
_TAKE_LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
#: (connect, read) seconds of the background health probe of the IdP.
HEALTH_PROBE_TIMEOUT = (0.5, 1.0)


class _Flight:
    """One in-progress refresh that other threads wait on."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: UserAttributes | None = None
        self.error: BaseException | None = None


class RedisAttributeClient:
    """Loads and caches :class:`UserAttributes` for one service (usable outside Flask).

    :param redis_url: ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` or
        ``redis+cluster://`` URL; ignored when ``redis`` is given.
    :param service_name: the default service for lookups.
    :param ttl: seconds an entry lives in Redis (``RBAC_ABAC_CACHE_TTL``).
    :param identity_provider_url: base URL of the IdP, for auto-refresh.
    :param service_token: this service's token at the IdP.
    :param redis: an existing redis-py (or fakeredis) client to use instead of ``redis_url``.
    :param invalidation: run the invalidation subscriber (started lazily by :meth:`listen`).
    :param value_keys: value-signing keys shared with the IdP (key id -> secret): a value in
        Redis without a valid signature by one of them is a miss, and writes are signed.
    """

    def __init__(
        self,
        redis_url: str = DEFAULT_REDIS_URL,
        *,
        service_name: str,
        ttl: int = DEFAULT_CACHE_TTL,
        identity_provider_url: str = DEFAULT_IDP_URL,
        service_token: str | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        auto_refresh: bool = True,
        local_cache_size: int = 10000,
        local_cache_ttl: float = 60,
        max_stale: float = 300,
        redis_timeout: float = DEFAULT_TIMEOUT,
        idp_timeout: tuple[float, float] = (0.5, 3.0),
        invalidation: bool = True,
        value_keys: ValueKeys | None = None,
        redis: Any = None,
        session: requests.Session | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service_name = validate_service_name(service_name)
        self.key_prefix = validate_prefix(key_prefix)
        self.ttl = int(ttl)
        self.auto_refresh = auto_refresh
        self.value_keys = dict(value_keys or {})
        self.redis_url = redis_url
        self.redis = redis if redis is not None else connect(redis_url, timeout=redis_timeout)
        self._redis_timeout = redis_timeout
        self._own_redis = redis is None
        self.local = LocalCache(local_cache_size, local_cache_ttl, max_stale, timer=timer)
        self.idp = IdentityProviderClient(
            identity_provider_url,
            service_token=service_token,
            timeout=idp_timeout,
            breaker=CircuitBreaker(timer=timer),
            session=session,
        )
        self.metrics = Stats()
        self.health = HealthState({"redis": self._probe_redis, "idp": self._probe_idp})
        self._flights: dict[Key, _Flight] = {}
        self._flights_lock = threading.Lock()
        self.subscriber: Subscriber | None = None
        if invalidation:
            self.subscriber = Subscriber(
                self._subscriber_redis,
                self.key_prefix,
                on_message=self._on_invalidation,
                on_connect=self.local.clear,
            )

    # -- keys -------------------------------------------------------------------------------

    def _key(self, user_id: object, service_name: str | None) -> Key:
        service = self.service_name if service_name is None else validate_service_name(service_name)
        return (service, validate_user_id(user_id))

    def key(self, user_id: int | str, service_name: str | None = None) -> str:
        """The Redis key of one entry."""
        service, user = self._key(user_id, service_name)
        return attributes_key(self.key_prefix, service, user)

    # -- the lookup path --------------------------------------------------------------------

    def get_user_attributes(
        self, user_id: int | str, service_name: str | None = None, auto_refresh: bool = True
    ) -> UserAttributes | None:
        """The user's attributes in ``service_name`` (default: this client's service).

        Returns ``None`` when nothing is cached and ``auto_refresh`` is off, or when the IdP says
        the user is unknown or inactive. Raises :class:`AttributesUnavailable` when the
        attributes cannot be obtained, and :class:`InvalidKeyPart` for a malformed id or name.
        """
        looked_up = None
        if service_name is None and type(user_id) in (int, str):
            # Only validated keys are ever stored, so a hit needs no validation (the hot path).
            looked_up = (self.service_name, user_id)
            attrs = self.local.get(looked_up)
            if attrs is not None:
                self.metrics.incr("l1_hits")
                return attrs
        started = time.perf_counter()
        key = self._key(user_id, service_name)
        try:
            if key != looked_up:  # normalised to another key ("123" -> 123): look again
                attrs = self.local.get(key)
                if attrs is not None:
                    self.metrics.incr("l1_hits")
                    return attrs
            self.metrics.incr("l1_misses")
            ticket = self.local.ticket(key)
            attrs, redis_ok = self._read_l2(key)
            if attrs is not None:
                self.metrics.incr("l2_hits")
                self.local.put(key, attrs, ticket)
                return attrs
            self.metrics.incr("l2_misses")
            if self.local.is_unknown(key):
                self.metrics.incr("unknown_hits")
                return None
            if not (auto_refresh and self.auto_refresh):
                return None
            return self._refresh_single_flight(key, redis_ok)
        finally:
            self.metrics.observe_lookup(time.perf_counter() - started)

    def _read_l2(self, key: Key) -> tuple[UserAttributes | None, bool]:
        """``(attrs or None, redis_ok)``."""
        redis_key = attributes_key(self.key_prefix, *key)
        try:
            raw = self.redis.get(redis_key)
        except REDIS_ERRORS as exc:
            self.metrics.incr("redis_errors")
            self.health.record("redis", False)
            log.warning("Redis GET failed, going to the identity provider: %s", exc)
            return None, False
        self.health.record("redis", True)
        if raw is None:
            return None, True
        try:
            attrs = decode_value(raw, self.value_keys)
        except DecodeError as exc:
            self.metrics.incr("decode_errors")
            log.warning("undecodable value at %s treated as a miss: %s", redis_key, exc)
            return None, True
        if (attrs.service_name, attrs.user_id) != key:
            self.metrics.incr("decode_errors")
            log.warning("value at %s belongs to another key; treated as a miss", redis_key)
            return None, True
        return attrs, True

    def _refresh_single_flight(self, key: Key, redis_ok: bool) -> UserAttributes | None:
        with self._flights_lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            self.metrics.incr("refresh_waits")
            # The leader may wait out another process's lease, then make its own call.
            if not flight.done.wait(self._lease_seconds() + sum(self.idp.timeout) + 1.0):
                raise AttributesUnavailable("timed out waiting for a concurrent refresh")
            if flight.error is not None:
                raise flight.error
            return flight.result
        try:
            flight.result = self._refresh(key, redis_ok)
            return flight.result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            flight.done.set()
            with self._flights_lock:
                self._flights.pop(key, None)

    def _refresh(self, key: Key, redis_ok: bool) -> UserAttributes | None:
        ticket = self.local.ticket(key)
        token = None
        failed = False
        try:
            if redis_ok:
                token, attrs = self._acquire_lease(key)
                if attrs is not None:
                    self.local.put(key, attrs, ticket)
                    return attrs
            self.metrics.incr("auto_refreshes")
            attrs = self._call_idp(key)
        except IdentityProviderError:
            failed = True
            stale = self._stale(key)
            if stale is not None:
                return stale
            raise
        finally:
            if token is not None:
                self._release_lease(key, token, failed)
        return self._keep_refreshed(key, attrs, ticket, manual=False)

    def _keep_refreshed(
        self, key: Key, attrs: UserAttributes | None, ticket: Ticket, *, manual: bool
    ) -> UserAttributes | None:
        """Put what the IdP answered into L1 (or drop the entry of an unknown user)."""
        if attrs is None:
            if not self.local.put_unknown(key, ticket):
                self.local.evict(key)
            return None
        self.local.put(key, attrs, ticket)
        signals.attributes_refreshed.send(self, attributes=attrs, manual=manual)
        return attrs

    def _lease_seconds(self) -> float:
        """How long a lease is held at most: its holder's whole IdP budget, plus a margin."""
        return sum(self.idp.timeout) + 1.0

    def _acquire_lease(self, key: Key) -> tuple[str | None, UserAttributes | None]:
        """Take the cross-process lease, or wait for its holder's result in Redis.

        While another process holds the lease, its call is the one refresh in flight for this
        key: this waits for its value in Redis, fails with it when it failed (the holder leaves
        :data:`LEASE_FAILED` for the waiters), and takes the lease itself only once it is
        released (an unknown user writes no value) or expired (its holder died). So there is at
        most one IdP call per key at any moment, and a holder killed mid-refresh delays the
        next one by at most the lease time.
        """
        name = lease_key(self.key_prefix, *key)
        token = uuid.uuid4().hex
        lease = self._lease_seconds()
        deadline = time.monotonic() + lease
        waited_on_holder = False
        try:
            while True:
                # Free, or holding only an earlier failure this call did not wait for: take it.
                replaceable = "" if waited_on_holder else LEASE_FAILED
                if self.redis.eval(_TAKE_LEASE, 1, name, token, int(lease * 1000), replaceable):
                    return token, None
                if waited_on_holder and self.redis.get(name) in _FAILED_VALUES:
                    self.metrics.incr("idp_errors")
                    raise IdentityProviderError(
                        "a concurrent refresh of this user failed", reason="peer_failed"
                    )
                waited_on_holder = True
                time.sleep(LEASE_POLL)
                attrs, ok = self._read_l2(key)
                if attrs is not None or not ok:
                    return None, attrs
                if time.monotonic() >= deadline:
                    return None, None  # never seen free (a clock jump?): refresh ourselves
        except REDIS_ERRORS:
            self.metrics.incr("redis_errors")
            self.health.record("redis", False)
            return None, None

    def _release_lease(self, key: Key, token: str, failed: bool = False) -> None:
        """Give the lease back, or (``failed``) leave :data:`LEASE_FAILED` in it for a moment."""
        name = lease_key(self.key_prefix, *key)
        try:
            # Compare-and-swap, so an expired lease taken by another process is left alone.
            self.redis.eval(
                "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
                "if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end "
                "return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])",
                1,
                name,
                token,
                LEASE_FAILED if failed else "",
                LEASE_FAILED_MS,
            )
        except REDIS_ERRORS:
            self.metrics.incr("redis_errors")

    def _call_idp(self, key: Key) -> UserAttributes | None:
        service, user = key
        try:
            attrs = self.idp.refresh(user, service)
        except IdentityProviderError as exc:
            # A refusal of this one request (a 4xx other than 401/403) still proves the IdP up.
            self.health.record("idp", exc.reason == "refused" and exc.status not in (401, 403))
            self.metrics.incr("idp_errors")
            if exc.reason == "breaker_open":
                self.metrics.incr("breaker_rejections")
            log.warning("identity provider refresh of %s/%s failed: %s", service, user, exc)
            raise
        finally:
            self.metrics.breaker(self.idp.breaker.state)
        self.health.record("idp", True)
        if attrs is None:
            self.metrics.incr("idp_not_found")
        return attrs

    def _stale(self, key: Key) -> UserAttributes | None:
        found = self.local.get_stale(key)
        if found is None:
            return None
        attrs, age = found
        if age > self.local.ttl + self.local.max_stale:
            return None
        self.metrics.incr("stale_served")
        log.warning("serving %s/%s %.0f s stale: the IdP is failing", key[0], key[1], age)
        signals.stale_served.send(self, attributes=attrs, age=age)
        return attrs

    # -- writes and explicit refreshes ------------------------------------------------------

    def set_user_attributes(self, attrs: UserAttributes, ttl: int | None = None) -> bool:
        """Write ``attrs`` to Redis (unless it holds a newer version) and to L1.

        Raises redis-py's errors when Redis cannot be written.
        """
        key = self._key(attrs.user_id, attrs.service_name)
        ticket = self.local.ticket(key)
        written = store_attributes(
            self.redis, attrs, ttl or self.ttl, self.key_prefix, self.value_keys
        )
        if written:
            self.local.put(key, attrs, ticket)
        return written

    def invalidate(self, user_id: int | str, service_name: str | None = None) -> None:
        """Delete one entry from Redis and L1, and tell the other processes to drop theirs."""
        key = self._key(user_id, service_name)
        self.local.evict(key)
        delete_attributes(self.redis, self.key_prefix, *key)
        publish_invalidation(self.redis, Invalidation(key[1], key[0]), self.key_prefix)

    def refresh_user_attributes_from_identity_provider(
        self, user_id: int | str, service_name: str | None = None
    ) -> UserAttributes | None:
        """Ask the IdP to rebuild the entry now (it writes Redis); ``None`` for an unknown or
        inactive user. Raises :class:`IdentityProviderError` when the IdP fails."""
        key = self._key(user_id, service_name)
        ticket = self.local.ticket(key)
        self.metrics.incr("manual_refreshes")
        return self._keep_refreshed(key, self._call_idp(key), ticket, manual=True)

    # -- invalidation -----------------------------------------------------------------------

    def _subscriber_redis(self) -> Any:
        if self._own_redis:
            return connect(self.redis_url, timeout=self._redis_timeout, retries=0)
        return self.redis

    def listen(self) -> None:
        """Make sure this process's invalidation subscriber runs (cheap; call per request)."""
        if self.subscriber is not None:
            self.subscriber.ensure_started()

    def _on_invalidation(self, message: Invalidation) -> None:
        if message.service_name is None:
            self.local.evict_user(message.user_id)
        else:
            self.local.evict((message.service_name, message.user_id), message.version)
        self.metrics.incr("invalidations")
        signals.cache_invalidated.send(
            self,
            user_id=message.user_id,
            service_name=message.service_name,
            version=message.version,
        )

    # -- operations -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters, hit ratio, average lookup time, L1 size and breaker state."""
        out = self.metrics.snapshot()
        out["l1_size"] = len(self.local)
        out["breaker"] = self.idp.breaker.state
        out["breaker_open"] = out["breaker"] == "open"
        return out

    def health_check(self) -> dict[str, str]:
        """``{"status", "redis", "idp", "subscriber"}``, each ``"ok"`` or ``"degraded"``.

        Answered from cached state (see :mod:`flask_rbac_abac.health`): it never waits on Redis
        or the IdP, and says nothing else (no address, no error text), so it can be public.
        ``subscriber`` is left out when invalidation is off.
        """
        report = self.health.report()
        if self.subscriber is not None:
            report["subscriber"] = OK if self.subscriber.state()["connected"] else DEGRADED
        healthy = all(state == OK for state in report.values())
        return {"status": OK if healthy else DEGRADED, **report}

    def _probe_redis(self) -> bool:
        try:
            return bool(self.redis.ping())
        except REDIS_ERRORS:
            return False

    def _probe_idp(self) -> bool:
        return bool(self.idp.health(timeout=HEALTH_PROBE_TIMEOUT)["ok"])

    def close(self) -> None:
        """Stop the subscriber and release connections."""
        if self.subscriber is not None:
            self.subscriber.stop()
        self.idp.close()
        if self._own_redis:
            close_redis(self.redis)

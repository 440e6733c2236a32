"""``RedisAttributeClient``: attributes through L1 (in process) -> L2 (Redis) -> the IdP.

The lookup path, in order:

1. L1 fresh hit: no I/O at all.
2. L2 (one ``GET``): decoded and validated; a value that fails to decode is a miss.
3. Miss with auto-refresh: one caller per key asks the IdP (single-flight in this process, a
   short Redis lease across processes: :mod:`.singleflight`); the IdP writes Redis and answers
   with the value.
4. The IdP failed: a stale L1 value no older than ``max_stale`` past its freshness is served,
   flagged and counted; otherwise :class:`AttributesUnavailable` (the caller answers 503).

On a hit, when the entry's ``due`` time has come (:mod:`.expiry`: one float compare, no I/O),
the read may record a TTL extension (sliding expiration, sent in batches in the background),
start a background refresh (refresh-ahead: at most one per key across the fleet, through a
non-blocking :class:`.Lease`; the request never waits for it) or, past ``max_age``, refresh
synchronously as a miss does.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from redis.exceptions import RedisClusterException, RedisError

from . import invalidation, signals
from .codec import ValueKeys, decode_value
from .config import Settings
from .connection import close as close_redis
from .connection import connect
from .defaults import (
    DEFAULT_AUTO_REFRESH,
    DEFAULT_CACHE_TTL,
    DEFAULT_IDP_TIMEOUT,
    DEFAULT_IDP_URL,
    DEFAULT_INVALIDATION,
    DEFAULT_LOCAL_CACHE_SIZE,
    DEFAULT_LOCAL_CACHE_TTL,
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_STALE,
    DEFAULT_REDIS_TIMEOUT,
    DEFAULT_REDIS_URL,
    DEFAULT_REFRESH_AHEAD,
    DEFAULT_SLIDING_EXPIRATION,
)
from .errors import DecodeError, IdentityProviderError
from .expiry import Extender, Policy
from .health import DEGRADED, OK, HealthState
from .idp import CircuitBreaker, IdentityProviderClient
from .invalidation import Subscriber
from .keys import DEFAULT_KEY_PREFIX, attributes_key, lease_key, validate_prefix
from .local_cache import Entry, Key, LocalCache, Ticket
from .metrics import Stats
from .model import Invalidation, UserAttributes, validate_service_name, validate_user_id
from .singleflight import HolderFailed, Lease, SingleFlight
from .store import delete_attributes, publish_invalidation, store_attributes

log = logging.getLogger(__name__)

REDIS_ERRORS = (RedisError, RedisClusterException, OSError)
#: The types of a user id that needs no validation to be looked up in L1 (only valid ids are
#: ever stored there).
_KEY_TYPES = (int, str)
#: (connect, read) seconds of the background health probe of the IdP.
HEALTH_PROBE_TIMEOUT = (0.5, 1.0)
#: Threads that run refresh-ahead, and the most keys waiting for one: a burst of due keys is
#: refreshed a few at a time, the rest at their next read.
REFRESH_AHEAD_WORKERS = 2
REFRESH_AHEAD_QUEUE = 1000


class RedisAttributeClient:
    """Loads and caches :class:`UserAttributes` for one service (usable outside Flask).

    Outside Flask, build it with keywords; ``init_app`` builds it from the app's validated
    settings instead (:meth:`from_settings`). Every default is the library's (:mod:`.defaults`).

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
    :param refresh_ahead: refresh an entry in the background when a read finds less than this
        fraction of its TTL left (``0``: never).
    :param sliding_expiration: reads extend the entry's Redis TTL (``sliding_interval``: at most
        once per key per that many seconds, default a tenth of ``ttl``), never past ``max_age``
        seconds since its ``fetched_at``; past that a read refreshes it from the IdP.
    :param timer: the monotonic clock (tests and the simulation control time through it).
    :param wall_clock: the wall clock ``fetched_at`` is compared with.
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
        auto_refresh: bool = DEFAULT_AUTO_REFRESH,
        local_cache_size: int = DEFAULT_LOCAL_CACHE_SIZE,
        local_cache_ttl: float = DEFAULT_LOCAL_CACHE_TTL,
        max_stale: float = DEFAULT_MAX_STALE,
        redis_timeout: float = DEFAULT_REDIS_TIMEOUT,
        idp_timeout: tuple[float, float] = DEFAULT_IDP_TIMEOUT,
        invalidation: bool = DEFAULT_INVALIDATION,
        value_keys: ValueKeys | None = None,
        refresh_ahead: float = DEFAULT_REFRESH_AHEAD,
        sliding_expiration: bool = DEFAULT_SLIDING_EXPIRATION,
        sliding_interval: float | None = None,
        max_age: int = DEFAULT_MAX_AGE,
        redis: Any = None,
        session: requests.Session | None = None,
        timer: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        settings = Settings(
            service_name=validate_service_name(service_name),
            key_prefix=validate_prefix(key_prefix),
            cache_ttl=int(ttl),
            redis_url=redis_url,
            identity_provider_url=identity_provider_url,
            service_token=service_token,
            auto_refresh=auto_refresh,
            local_cache_size=local_cache_size,
            local_cache_ttl=local_cache_ttl,
            max_stale=max_stale,
            redis_timeout=redis_timeout,
            idp_timeout=idp_timeout,
            invalidation=invalidation,
            value_keys=dict(value_keys or {}),
            refresh_ahead=refresh_ahead,
            sliding_expiration=sliding_expiration,
            sliding_interval=sliding_interval,
            max_age=max_age,
        )
        self._setup(settings, redis=redis, session=session, timer=timer, wall_clock=wall_clock)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        redis: Any = None,
        session: requests.Session | None = None,
        timer: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> RedisAttributeClient:
        """A client for validated ``settings`` (:func:`.config.load`): how ``init_app`` builds
        one. ``redis``, ``session``, ``timer`` and ``wall_clock`` are as for the keyword
        constructor, which is not called."""
        client = cls.__new__(cls)
        client._setup(settings, redis=redis, session=session, timer=timer, wall_clock=wall_clock)
        return client

    def _setup(
        self,
        settings: Settings,
        *,
        redis: Any,
        session: requests.Session | None,
        timer: Callable[[], float],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.service_name = settings.service_name
        self.key_prefix = settings.key_prefix
        self.ttl = settings.cache_ttl
        self.auto_refresh = settings.auto_refresh
        self.value_keys = dict(settings.value_keys)
        self.redis_url = settings.redis_url
        self.redis = redis if redis is not None else self._connect(retries=1)
        self._own_redis = redis is None
        self.local = LocalCache(
            settings.local_cache_size, settings.local_cache_ttl, settings.max_stale, timer=timer
        )
        self.idp = IdentityProviderClient(
            settings.identity_provider_url,
            service_token=settings.service_token,
            timeout=settings.idp_timeout,
            breaker=CircuitBreaker(timer=timer),
            session=session,
        )
        self.metrics = Stats()
        self.health = HealthState({"redis": self._probe_redis, "idp": self._probe_idp})
        # A lease is held at most for its holder's whole IdP budget, plus a margin. A follower
        # in this process waits for its leader, who may wait out another process's lease and
        # then make its own call.
        self._lease_ttl = sum(settings.idp_timeout) + 1.0
        self._single_flight: SingleFlight[Key, UserAttributes | None] = SingleFlight(
            self._lease_ttl + sum(settings.idp_timeout) + 1.0,
            on_wait=lambda: self.metrics.incr("refresh_waits"),
        )
        self._timer = timer
        self._wall_clock = wall_clock
        interval = settings.sliding_interval or settings.cache_ttl / 10
        self.policy = Policy(
            ttl=float(settings.cache_ttl),
            ahead=settings.refresh_ahead,
            sliding=settings.sliding_expiration,
            interval=interval,
            max_age=float(settings.max_age),
        )
        self.extender = Extender(self.redis, interval / 2, on_error=self._extension_failed)
        self._ahead_lock = threading.Lock()
        self._ahead_pending: set[Key] = set()
        self._ahead_executor: ThreadPoolExecutor | None = None
        self._owner: weakref.ref[Any] | None = None
        #: The process generation (:func:`.invalidation.process_generation`) in which
        #: :meth:`listen` last ran: the lookup path starts the subscriber once per process.
        self._listening_in = -1
        self.subscriber: Subscriber | None = None
        if settings.invalidation:
            self.subscriber = Subscriber(
                self._subscriber_redis,
                self.key_prefix,
                on_message=self._on_invalidation,
                on_connect=self.local.clear,
            )

    @property
    def owner(self) -> Any:
        """The Flask app this client serves (``init_app`` sets it), or ``None`` when standalone.

        Held weakly, so the app can still be garbage collected. Signals are sent with the owner
        as sender, or with this client when it has none (see :mod:`.signals`).
        """
        return None if self._owner is None else self._owner()

    @owner.setter
    def owner(self, app: Any) -> None:
        self._owner = None if app is None else weakref.ref(app)

    def _sender(self) -> Any:
        """Who signals come from: the owning app, else this client (standalone)."""
        app = None if self._owner is None else self._owner()
        return self if app is None else app

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
        if self._listening_in != invalidation.generation:
            self.listen()  # once per process: a standalone client sees invalidations too
        looked_up = None
        if service_name is None and type(user_id) in _KEY_TYPES:
            # Only validated keys are ever stored, so a hit needs no validation (the hot path:
            # no lock, no I/O, one clock reading when the entry is not due).
            looked_up = (self.service_name, user_id)
            entry = self.local.entries.get(looked_up)
            if entry is not None and entry.due > self._timer():  # fresh and not due
                self.metrics.l1_hit()
                return entry.attrs
            entry = self.local.get_entry(looked_up)
            if entry is not None and self._servable(looked_up, entry):  # due: act on it first
                self.metrics.l1_hit()
                return entry.attrs
        started = time.perf_counter()
        key = self._key(user_id, service_name)
        try:
            if key != looked_up:  # normalised to another key ("123" -> 123): look again
                entry = self.local.get_entry(key)
                if entry is not None and self._servable(key, entry):
                    self.metrics.l1_hit()
                    return entry.attrs
            self.metrics.incr("l1_misses")
            ticket = self.local.ticket(key)
            attrs, redis_ok, expires = self._read_l2_timed(key)
            if attrs is not None:
                self.metrics.incr("l2_hits")
                if self._servable(key, self._put(key, attrs, ticket, expires)):
                    return attrs
                # past its max age: refreshed from the IdP below, as a miss is
            else:
                self.metrics.incr("l2_misses")
            if self.local.is_unknown(key):
                self.metrics.incr("unknown_hits")
                return None
            if not (auto_refresh and self.auto_refresh):
                return None
            return self._refresh_once(key, redis_ok)
        finally:
            self.metrics.observe_lookup(time.perf_counter() - started)

    def _refresh_once(self, key: Key, redis_ok: bool) -> UserAttributes | None:
        """:meth:`_refresh`, one at a time per key in this process (the others wait for it)."""
        return self._single_flight.run(key, lambda: self._refresh(key, redis_ok))

    def _read_l2(self, key: Key) -> tuple[UserAttributes | None, bool]:
        """``(attrs or None, redis_ok)``."""
        attrs, redis_ok, _ = self._read_l2_timed(key)
        return attrs, redis_ok

    def _read_l2_timed(self, key: Key) -> tuple[UserAttributes | None, bool, float]:
        """``(attrs or None, redis_ok, expires)``: ``expires`` is when the key expires on this
        client's clock (``inf`` when unknown or not needed by :attr:`policy`).

        One ``GET``; a ``PTTL`` too only when the policy needs the exact TTL: with sliding
        expiration, or when ``fetched_at + ttl`` says the entry is near its end.
        """
        redis_key = attributes_key(self.key_prefix, *key)
        try:
            raw = self.redis.get(redis_key)
        except REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return None, False, math.inf
        self.health.record("redis", True)
        if raw is None:
            return None, True, math.inf
        try:
            attrs = decode_value(raw, self.value_keys)
        except DecodeError as exc:
            self.metrics.incr("decode_errors")
            log.warning("undecodable value at %s treated as a miss: %s", redis_key, exc)
            return None, True, math.inf
        if (attrs.service_name, attrs.user_id) != key:
            self.metrics.incr("decode_errors")
            log.warning("value at %s belongs to another key; treated as a miss", redis_key)
            return None, True, math.inf
        if not self.policy.active:
            return attrs, True, math.inf
        now, wall_now = self._timer(), self._wall_clock()
        if not self.policy.needs_pttl(attrs.fetched_at, wall_now):
            return attrs, True, now + attrs.fetched_at + self.policy.ttl - wall_now
        try:
            pttl = int(self.redis.pttl(redis_key))
        except REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return attrs, True, math.inf
        # -1: no TTL at all; -2: expired between the two calls.
        remaining = math.inf if pttl == -1 else max(pttl, 0) / 1000
        return attrs, True, now + remaining

    def _redis_failed(self, exc: BaseException) -> None:
        self.metrics.incr("redis_errors")
        self.health.record("redis", False)
        log.warning("Redis read failed, going to the identity provider: %s", exc)

    # -- refresh-ahead and sliding expiration -------------------------------------------------

    def _put(self, key: Key, attrs: UserAttributes, ticket: Ticket, expires: float) -> Entry:
        """Put ``attrs`` into L1 with its expiry times; returns the entry (stored or not)."""
        limit = self.policy.limit(attrs.fetched_at, self._timer(), self._wall_clock())
        due = self.policy.due(expires, limit)
        self.local.put(key, attrs, ticket, expires, limit, due)
        return Entry(attrs, 0.0, expires, limit, due)

    def _servable(self, key: Key, entry: Entry) -> bool:
        """May ``entry`` answer this read? Acts on it first when it is due (no I/O)."""
        return entry.due > self._timer() or self._on_due(key, entry)

    def _on_due(self, key: Key, entry: Entry) -> bool:
        """A read found ``entry`` due (:mod:`.expiry`): extend its TTL and/or refresh it in
        the background. ``False`` when it is past its max age and must not be served."""
        now = self._timer()
        if now >= entry.limit:
            return False
        expires = entry.expires
        if now >= self.policy.extend_at(expires, entry.limit):
            expires = min(now + self.policy.ttl, entry.limit)
            name = attributes_key(self.key_prefix, *key)
            self.extender.extend(name, max(1, int((expires - now) * 1000)))
        if now >= self.policy.refresh_at(expires, entry.limit):
            self._start_refresh_ahead(key, entry.attrs)
            # looked at again by the next read, which finds it pending or refreshed
            due = self.policy.due(expires, entry.limit)
            due = max(due, now + min(self._lease_ttl, self.policy.interval))
        else:
            due = self.policy.due(expires, entry.limit)
        self.local.reschedule(key, entry.attrs, expires, due)
        return True

    def _extension_failed(self, exc: BaseException) -> None:
        self.metrics.incr("redis_errors")
        log.warning("sliding expiration: extending TTLs failed: %s", exc)

    def _start_refresh_ahead(self, key: Key, attrs: UserAttributes) -> None:
        with self._ahead_lock:
            if key in self._ahead_pending or len(self._ahead_pending) >= REFRESH_AHEAD_QUEUE:
                return
            self._ahead_pending.add(key)
            if self._ahead_executor is None:
                self._ahead_executor = ThreadPoolExecutor(
                    REFRESH_AHEAD_WORKERS, thread_name_prefix="rbac-abac-refresh-ahead"
                )
            executor = self._ahead_executor
        executor.submit(self._refresh_ahead, key, attrs)

    def _refresh_ahead(self, key: Key, seen: UserAttributes) -> None:
        """Refresh ``key`` from the IdP unless another process is or did (its lease is held,
        or Redis already holds another value than ``seen``). Never raises: a failure leaves the
        cache as it was, and the request that started it has long been answered."""
        lease = Lease(self.redis, lease_key(self.key_prefix, *key), ttl=self._lease_ttl)
        try:
            if not lease.try_acquire():
                return
            ticket = self.local.ticket(key)
            current, redis_ok, expires = self._read_l2_timed(key)
            if current is not None and current.fetched_at != seen.fetched_at:
                self._put(key, current, ticket, expires)  # another process refreshed it
                return
            if not redis_ok:
                return
            attrs = self._call_idp(key)
            self.metrics.incr("refresh_ahead")
            self._keep_refreshed(key, attrs, ticket, manual=False)
        except IdentityProviderError:
            pass  # counted and logged by _call_idp; the entry stays as it was
        except REDIS_ERRORS as exc:
            self._redis_failed(exc)
        except Exception:  # a background thread must not die silently
            log.exception("refresh-ahead of %s/%s failed", key[0], key[1])
        finally:
            try:
                lease.release()
            except REDIS_ERRORS:
                self.metrics.incr("redis_errors")  # it expires by itself
            with self._ahead_lock:
                self._ahead_pending.discard(key)

    def _refresh(self, key: Key, redis_ok: bool) -> UserAttributes | None:
        ticket = self.local.ticket(key)
        lease = None
        failed = False
        try:
            if redis_ok:
                lease = Lease(self.redis, lease_key(self.key_prefix, *key), ttl=self._lease_ttl)
                attrs = self._take_lease(lease, key)
                if attrs is not None:  # the lease holder's value, just written
                    self._put(key, attrs, ticket, self._timer() + self.policy.ttl)
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
            if lease is not None:
                self._release_lease(lease, failed)
        return self._keep_refreshed(key, attrs, ticket, manual=False)

    def _keep_refreshed(
        self, key: Key, attrs: UserAttributes | None, ticket: Ticket, *, manual: bool
    ) -> UserAttributes | None:
        """Put what the IdP answered into L1 (or drop the entry of an unknown user)."""
        if attrs is None:
            if not self.local.put_unknown(key, ticket):
                self.local.evict(key)
            return None
        self._put(key, attrs, ticket, self._timer() + self.policy.ttl)  # the IdP just wrote it
        signals.attributes_refreshed.send(self._sender(), attributes=attrs, manual=manual)
        return attrs

    def _take_lease(self, lease: Lease, key: Key) -> UserAttributes | None:
        """Take the cross-process lease, or return its holder's result once it is in Redis.

        ``None`` with the lease held, or without it when Redis fails (this process refreshes
        anyway). When the holder this waited on failed, so does this call, with no IdP call of
        its own (see :class:`.Lease`).
        """
        try:
            return lease.acquire_or_wait(lambda: self._read_l2(key))
        except HolderFailed:
            self.metrics.incr("idp_errors")
            raise IdentityProviderError(
                "a concurrent refresh of this user failed", reason="peer_failed"
            ) from None
        except REDIS_ERRORS:
            self.metrics.incr("redis_errors")
            self.health.record("redis", False)
            return None

    def _release_lease(self, lease: Lease, failed: bool) -> None:
        try:
            lease.release(failed=failed)
        except REDIS_ERRORS:
            self.metrics.incr("redis_errors")  # it expires by itself

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
        signals.stale_served.send(self._sender(), attributes=attrs, age=age)
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
            self._put(key, attrs, ticket, self._timer() + (ttl or self.ttl))
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

    def _connect(self, *, retries: int) -> Any:
        return connect(self.redis_url, timeout=self.settings.redis_timeout, retries=retries)

    def _subscriber_redis(self) -> Any:
        if self._own_redis:
            return self._connect(retries=0)
        return self.redis

    def listen(self) -> None:
        """Make sure this process's invalidation subscriber runs (idempotent).

        The first lookup in each process calls it, so a standalone client needs no call; the
        extension also calls it at the app's first request.
        """
        self._listening_in = invalidation.generation
        if self.subscriber is not None:
            self.subscriber.ensure_started()

    def _on_invalidation(self, message: Invalidation) -> None:
        if message.service_name is None:
            self.local.evict_user(message.user_id)
        elif message.gone:  # the IdP has no value for her there: deny without asking it
            self.local.forget((message.service_name, message.user_id))
        else:
            self.local.evict((message.service_name, message.user_id), message.version)
        self.metrics.incr("invalidations")
        signals.cache_invalidated.send(
            self._sender(),  # the stored app: this runs in the subscriber thread, no app context
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
        """Stop the subscriber and the background refreshes, send pending TTL extensions and
        release connections."""
        if self.subscriber is not None:
            self.subscriber.stop()
        with self._ahead_lock:
            executor, self._ahead_executor = self._ahead_executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        self.extender.close()
        self.idp.close()
        if self._own_redis:
            close_redis(self.redis)

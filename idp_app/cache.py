"""The identity provider's side of the Redis cache: writes, evictions, invalidations, coalescing.

Every call here is best effort: Redis failing never fails a request, because the database is the
source of truth. Failures are logged (without keys' contents) and reported to the caller as
``False`` so responses can say ``"cached": false``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from flask import Flask, current_app, g, has_request_context
from redis.exceptions import RedisClusterException

from flask_rbac_abac import codec
from flask_rbac_abac.codec import Invalidation, UserAttributes
from flask_rbac_abac.connection import connect
from flask_rbac_abac.errors import DecodeError

from . import metrics

logger = logging.getLogger("idp_app.cache")

REDIS_ERRORS = (redis.RedisError, RedisClusterException, OSError)
GONE = b"gone"

_lock = threading.Lock()


def client(app: Flask | None = None) -> Any:
    """This process's Redis client for ``app``, created on first use.

    Created lazily and per process id, so a client built before a fork (gunicorn ``--preload``)
    is never shared by the workers.
    """
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    state = app.extensions["idp_app"]
    pid = os.getpid()
    entry = state.get("redis")
    if entry is None or entry[0] != pid:
        with _lock:
            entry = state.get("redis")
            if entry is None or entry[0] != pid:
                made = connect(
                    app.config["RBAC_ABAC_REDIS_URL"], timeout=app.config["IDP_REDIS_TIMEOUT"]
                )
                entry = state["redis"] = (pid, made)
    return entry[1]


def _redis() -> Any:
    """The client, unless Redis already failed in this request: one timeout per request, not n."""
    if has_request_context() and g.get("_idp_redis_failed"):
        raise redis.ConnectionError("skipped: redis failed earlier in this request")
    try:
        return client()
    except REDIS_ERRORS:
        raise
    except Exception as exc:  # e.g. a sentinel URL without a service name
        raise redis.ConnectionError(f"cannot build the Redis client: {type(exc).__name__}") from exc


def _prefix() -> str:
    return str(current_app.config["RBAC_ABAC_KEY_PREFIX"])


def coalesce_key(prefix: str, service_name: str, user_id: int | str) -> str:
    """The short-lived key that lets one refresh per window load from the database."""
    return f"{prefix}:coalesce:{service_name}:{user_id}"


def _failed(what: str, exc: BaseException) -> bool:
    logger.warning("redis %s failed: %s", what, type(exc).__name__)
    if has_request_context():
        g._idp_redis_failed = True
    return False


def write(attrs: UserAttributes) -> bool | None:
    """Write ``attrs`` with the configured TTL unless Redis holds a newer version.

    ``True`` written, ``False`` a newer value was kept, ``None`` Redis failed.
    """
    try:
        return codec.store_attributes(
            _redis(), attrs, current_app.config["RBAC_ABAC_CACHE_TTL"], _prefix()
        )
    except REDIS_ERRORS as exc:
        _failed("write", exc)
        return None


def store(attrs: UserAttributes) -> bool:
    """:func:`write`, reporting only whether Redis answered."""
    return write(attrs) is not None


def read(service_name: str, user_id: int) -> UserAttributes | None:
    """The cached value, or ``None`` when absent, undecodable or Redis fails."""
    try:
        raw = _redis().get(codec.attributes_key(_prefix(), service_name, user_id))
    except REDIS_ERRORS as exc:
        _failed("read", exc)
        return None
    if raw is None:
        return None
    try:
        return UserAttributes.from_json(raw)
    except DecodeError:
        logger.warning("undecodable cached value for %s/%s", service_name, user_id)
        return None


def publish(message: Invalidation) -> bool:
    try:
        codec.publish_invalidation(_redis(), message, _prefix())
    except REDIS_ERRORS as exc:
        metrics.published(False)
        return _failed("publish", exc)
    metrics.published(True)
    return True


def acquire_refresh(service_name: str, user_id: int) -> bool | None:
    """Claim this window's database load: ``True`` claimed, ``False`` taken, ``None`` no Redis.

    Also ``True`` when coalescing is off (``IDP_REFRESH_COALESCE_SECONDS = 0``).
    """
    window = current_app.config["IDP_REFRESH_COALESCE_SECONDS"]
    if not window:
        return True
    key = coalesce_key(_prefix(), service_name, user_id)
    try:
        got = _redis().set(key, b"1", nx=True, px=max(1, int(window * 1000)))
    except REDIS_ERRORS as exc:
        _failed("coalesce", exc)
        return None
    return bool(got)


def mark_gone(service_name: str, user_id: int) -> None:
    """Remember for this window that the user is unknown, so a loop stays off the database."""
    window = current_app.config["IDP_REFRESH_COALESCE_SECONDS"]
    if not window:
        return
    key = coalesce_key(_prefix(), service_name, user_id)
    try:
        _redis().set(key, GONE, px=max(1, int(window * 1000)))
    except REDIS_ERRORS as exc:
        _failed("coalesce", exc)


def is_gone(service_name: str, user_id: int) -> bool:
    try:
        value = _redis().get(coalesce_key(_prefix(), service_name, user_id))
    except REDIS_ERRORS as exc:
        return _failed("coalesce", exc)
    return bool(value == GONE)


def evict(user_id: int, service_names: Iterable[str]) -> bool:
    """Delete the cached values (one key per command: fine on Redis Cluster)."""
    ok = True
    prefix = _prefix()
    for name in service_names:
        try:
            _redis().delete(codec.attributes_key(prefix, name, user_id))
        except REDIS_ERRORS as exc:
            ok = _failed("delete", exc)
    return ok


def clear_coalesce(user_id: int, service_names: Iterable[str]) -> None:
    prefix = _prefix()
    for name in service_names:
        try:
            _redis().delete(coalesce_key(prefix, name, user_id))
        except REDIS_ERRORS as exc:
            _failed("coalesce", exc)


@dataclass
class Sync:
    """What a committed change must do to Redis: write new values, delete, announce."""

    stores: list[UserAttributes] = field(default_factory=list)
    evictions: list[tuple[int, str]] = field(default_factory=list)
    messages: list[Invalidation] = field(default_factory=list)

    def apply(self) -> bool:
        """Run after the database commit; ``True`` when Redis took every step."""
        ok = True
        for attrs in self.stores:
            ok = store(attrs) and ok
        for user_id, name in self.evictions:
            ok = evict(user_id, [name]) and ok
        touched = {(a.user_id, a.service_name) for a in self.stores} | set(self.evictions)
        for user_id, name in sorted(touched, key=str):
            clear_coalesce(int(user_id), [name])
        for message in self.messages:
            ok = publish(message) and ok
        return ok

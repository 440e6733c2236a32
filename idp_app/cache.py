"""The identity provider's side of the Redis cache: writes, evictions, invalidations, coalescing.

Every call here is best effort: Redis failing never fails a request, because the database is the
source of truth (and :mod:`idp_app.outbox` delivers what failed later). Failures are logged
(without keys' contents) and reported to the caller as ``False`` so responses can say
``"cached": false``.

A corrupt entry found while writing (undecodable, without a TTL, or ahead of the database) is
overwritten by the store, logged without its contents and counted per process
(:func:`repaired_entries`, shown by ``/healthz``).

Key names, the value encoding, the compare-and-set write and the announcement come from
:mod:`flask_rbac_abac.shared`, the same code the services read with; the TTL of what is written
is the IdP's own ``RBAC_ABAC_CACHE_TTL`` (see :mod:`idp_app.settings`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import redis
from flask import Flask, current_app, g, has_request_context
from redis.exceptions import RedisClusterException

from flask_rbac_abac.shared import (
    DecodeError,
    Invalidation,
    PatchResult,
    StoreResult,
    UserAttributes,
    attributes_key,
    coalesce_key,
    connect,
    decode_value,
    delete_attributes,
    patch_attributes,
    publish_invalidation,
    replace_if_unchanged,
    write_attributes,
    write_attributes_batch,
)

from . import metrics

if TYPE_CHECKING:
    from .operations import ServicePatch

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


def _failed(what: str, exc: BaseException) -> bool:
    logger.warning("redis %s failed: %s", what, type(exc).__name__)
    if has_request_context():
        g._idp_redis_failed = True
    return False


def write(attrs: UserAttributes, *, authority: int | None = None) -> bool | None:
    """Write ``attrs`` with the IdP's TTL unless Redis holds a newer, valid version.

    ``True`` written (``attrs`` is now the value in Redis), ``False`` a newer value was kept,
    ``None`` Redis failed. With value-signing keys, a "newer" value that does not carry this
    IdP's signature was not written by it and is replaced too.

    :param authority: the database's current version for this entry, passed only by a caller
        that holds the user's lock (so no newer version can be committed meanwhile); a stored
        version ahead of it is corrupt and overwritten.
    """
    keys = current_app.config["RBAC_ABAC_VALUE_KEYS"]
    ttl = current_app.config["RBAC_ABAC_CACHE_TTL"]
    try:
        client = _redis()
        result = write_attributes(client, attrs, ttl, _prefix(), authority=authority, keys=keys)
        if result is StoreResult.KEPT_NEWER and keys:
            raw = client.get(attributes_key(_prefix(), attrs.service_name, attrs.user_id))
            if (
                raw is not None
                and not _signed(raw)
                and replace_if_unchanged(client, attrs, ttl, _prefix(), raw, keys)
            ):
                result = StoreResult.REPAIRED
    except REDIS_ERRORS as exc:
        _failed("write", exc)
        return None
    if result is StoreResult.REPAIRED:
        _count_repair()
        logger.warning(
            "overwrote a corrupt cached value for %s/%s (undecodable, unsigned, no TTL or ahead "
            "of the database)",
            attrs.service_name,
            attrs.user_id,
        )
    return result.landed


def _signed(raw: bytes) -> bool:
    """Whether ``raw`` carries a valid signature by one of this IdP's value keys."""
    try:
        decode_value(raw, current_app.config["RBAC_ABAC_VALUE_KEYS"])
    except DecodeError:
        return False
    return True


def _count_repair() -> None:
    state = current_app.extensions["idp_app"]
    with _lock:
        state["repaired_entries"] = state.get("repaired_entries", 0) + 1


def repaired_entries(app: Flask | None = None) -> int:
    """How many corrupt cached values this process has overwritten since it started."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    return int(app.extensions["idp_app"].get("repaired_entries", 0))


def read(service_name: str, user_id: int) -> UserAttributes | None:
    """The cached value, or ``None`` when absent, undecodable or Redis fails."""
    try:
        raw = _redis().get(attributes_key(_prefix(), service_name, user_id))
    except REDIS_ERRORS as exc:
        _failed("read", exc)
        return None
    if raw is None:
        return None
    try:
        return decode_value(raw, current_app.config["RBAC_ABAC_VALUE_KEYS"])
    except DecodeError:
        logger.warning("undecodable cached value for %s/%s", service_name, user_id)
        return None


def publish(message: Invalidation) -> bool:
    try:
        publish_invalidation(_redis(), message, _prefix())
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
            delete_attributes(_redis(), prefix, name, user_id)
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


def write_batch(entries: Sequence[tuple[UserAttributes, int]]) -> list[bool] | None:
    """Write many ``(value, ttl)`` pairs in one pipeline: :func:`write` for a batch.

    Per entry ``True`` when written, ``False`` when a newer value was kept; ``None`` when Redis
    failed (some entries may have landed: each is a safe compare-and-set, so the caller may
    simply try again). With value-signing keys, an entry kept as newer is checked through
    :func:`write` (one call each: rare), which replaces it when this IdP did not sign it.
    """
    keys = current_app.config["RBAC_ABAC_VALUE_KEYS"]
    try:
        results = write_attributes_batch(_redis(), entries, _prefix(), keys=keys)
    except REDIS_ERRORS as exc:
        _failed("batch write", exc)
        return None
    landed = []
    for (attrs, _), result in zip(entries, results, strict=True):
        if result is StoreResult.KEPT_NEWER and keys:
            again = write(attrs)
            if again is None:
                return None
            landed.append(again)
            continue
        if result is StoreResult.REPAIRED:
            _count_repair()
            logger.warning(
                "overwrote a corrupt cached value for %s/%s", attrs.service_name, attrs.user_id
            )
        landed.append(result.landed)
    return landed


def entry_ttl(service_name: str, user_id: int) -> int | None:
    """Seconds the cached value has left; ``None`` when absent or without a TTL.

    :raises redis.RedisError: Redis failed (the admin console shows it).
    """
    ttl = _redis().ttl(attributes_key(_prefix(), service_name, user_id))
    return None if ttl is None or ttl < 0 else int(ttl)


def value_keys() -> bool:
    """Whether values are signed (``RBAC_ABAC_VALUE_KEYS``): then they cannot be patched."""
    return bool(current_app.config["RBAC_ABAC_VALUE_KEYS"])


def patch(
    user_id: int, service_name: str, change: ServicePatch, fetched_at: float | None = None
) -> PatchResult | None:
    """Patch the fields ``change`` names into the cached value, in place; ``None``: Redis failed.

    Anything but :attr:`PatchResult.PATCHED` wrote nothing: the caller rewrites the value in full
    (:func:`write`). Never with value-signing keys: a patched value could not be re-signed.
    """
    try:
        return patch_attributes(
            _redis(),
            _prefix(),
            service_name,
            user_id,
            version=change.version,
            ttl=current_app.config["RBAC_ABAC_CACHE_TTL"],
            fetched_at=time.time() if fetched_at is None else fetched_at,
            roles=change.roles,
            permissions=change.permissions,
            attributes=change.attributes,
            set_attributes=change.set,
            remove_attributes=change.remove,
        )
    except REDIS_ERRORS as exc:
        _failed("patch", exc)
        return None

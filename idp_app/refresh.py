"""Refresh one user's cached value for one service: what ``POST /api/refresh-user-cache/`` does.

The database is read at most once per key per coalescing window: a refresh that finds the
window taken answers from the value the other one wrote. The value is written to Redis while
the user's row is locked, so a concurrent change commits after it lands, and the answer is
never older than what Redis holds. A service sees only the people it has given a role, and only
the attributes its registration lists (:func:`.operations.value_for_service`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask_rbac_abac.shared import Invalidation, UserAttributes

from . import activity, cache, operations
from .domain_errors import UserNotFound
from .extensions import db

logger = logging.getLogger("idp_app.refresh")


@dataclass(frozen=True)
class Refreshed:
    """The outcome of a refresh.

    :param attributes: the user's value in the service.
    :param cached: Redis holds it (this refresh wrote it, or a newer one was there).
    :param coalesced: answered from another refresh's work in this window.
    """

    attributes: UserAttributes
    cached: bool
    coalesced: bool = False


def refresh_user(
    user_id: int, service_name: str, fields: frozenset[str] | None = None
) -> Refreshed:
    """Load ``user_id``'s value in ``service_name`` into Redis and return it; commits.

    :param fields: the parts of the value (:data:`.operations.FIELDS`) that changed since the
        previous version, when the caller knows only some did (one service's roles, the
        attributes). Only those are written into the cached value, in place, and only if it
        holds exactly the previous version; otherwise (or with value-signing keys, since a
        patched value could not be re-signed in Redis) the whole value is written. The database
        is read as for a full refresh: the roles decide whether the service may know the user at
        all. The answer is always the whole value. The change's own outbox delivery follows
        whatever a caller claims, so a wrong claim lasts until then at most.

    :raises ServiceNotRegistered: no such service.
    :raises UserNotFound: the user is unknown to the service (no such user, deactivated, or
        holding no role in it); their cached value is deleted (and announced) and remembered as
        gone for the coalescing window.
    """
    service = operations.get_service(service_name)

    if cache.acquire_refresh(service_name, user_id) is False:
        # Another refresh loaded this key from the database moments ago: answer from its work.
        hit = cache.read(service_name, user_id)
        if hit is not None and hit.roles:  # a role-less entry is a leftover: load again
            return Refreshed(hit, cached=True, coalesced=True)
        if cache.is_gone(service_name, user_id):
            raise UserNotFound(user_id)

    user = operations.lock_user(user_id)
    attrs = operations.value_for_service(user, service)
    if user is None or attrs is None:
        cache.evict(user_id, [service_name])
        cache.mark_gone(service_name, user_id)
        cache.publish(Invalidation(user_id, service_name, None))
        db.session.rollback()
        raise UserNotFound(user_id)

    activity.seen(user)  # committed below with the rest of this transaction
    # Written while the user's row is locked: a concurrent change commits after this lands.
    written = _write(attrs, fields)
    cached = written is not None
    if written:
        cache.publish(Invalidation(user_id, service_name, attrs.version))
    elif written is False:
        newer = cache.read(service_name, user_id)  # never answer older than what Redis holds
        if newer is not None and newer.version > attrs.version:
            attrs = newer
    else:
        logger.warning("answered %s/%s from the database only", service_name, user_id)
    db.session.commit()
    return Refreshed(attrs, cached=cached)


def _write(attrs: UserAttributes, fields: frozenset[str] | None) -> bool | None:
    """:func:`.cache.write`, or only ``fields`` patched in place when that applies."""
    if fields and fields != frozenset(operations.FIELDS) and not cache.value_keys():
        change = operations.ServicePatch(
            attrs.version,
            roles=list(attrs.roles) if "roles" in fields else None,
            permissions=list(attrs.permissions) if "roles" in fields else None,
            attributes=attrs.to_dict()["attributes"] if "attributes" in fields else None,
        )
        result = cache.patch(int(attrs.user_id), attrs.service_name, change, attrs.fetched_at)
        if result is None:
            return None
        if result.patched:
            return True
    return cache.write(attrs)

"""Cache warming: write many users' values for one service into Redis ahead of their requests.

After a Redis flush, a new region or a deploy, every first request of every user would otherwise
miss and call the IdP. Warming loads them in batches instead: per batch of :data:`BATCH_SIZE`
users, four database queries (the users, locked; their role assignments in the service; their
versions; the service itself) and one Redis pipeline of compare-and-set writes
(:func:`idp_app.cache.write_batch`), never a query and a round trip per user.

Why the pieces are as they are:

- The users of a batch are locked (``SELECT ... FOR UPDATE`` on PostgreSQL) until their values
  are in Redis, as a single refresh locks its user: a role revoked meanwhile commits after the
  warm value landed, and its delivery then replaces or deletes it. The service row is read after
  the lock for the same reason (a manifest change bumps the versions of users it must lock).
- Each write goes through the same script as a single write, so a warm never overwrites a newer
  value; nothing is published, because nothing a service holds becomes wrong.
- Each key gets the configured TTL minus a random jitter of up to :data:`JITTER` of it, so keys
  warmed together do not all expire, and come back to the IdP, in the same second.
- Least privilege holds: only active users with a role in the service are written; asked-for ids
  that are not are reported as unknown.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy import Select, func, select

from flask_rbac_abac.shared import UserAttributes

from . import cache, metrics, operations
from .domain_errors import RedisUnavailable
from .extensions import db
from .models import MAX_DB_ID, RoleAssignment, Service, User, UserServiceVersion

#: Users per batch: one pipeline and four queries each.
BATCH_SIZE = 1000
#: The most ids one ``user_ids`` request may name: 5000 ids of up to 10 digits (every id the
#: database can hold) fit in the 64 KiB a request body may have.
MAX_USER_IDS = 5000
#: A key's TTL is the configured one less a random part of up to this fraction of it.
JITTER = 0.1

_random = random.Random()  # noqa: S311 - spreads expiry times; nothing secret depends on it


@dataclass(frozen=True)
class Selection:
    """Which users to warm: exactly one of ``user_ids``, ``active_since`` (Unix time) or all."""

    user_ids: tuple[int, ...] | None = None
    active_since: float | None = None


@dataclass
class WarmResult:
    service_name: str
    #: Values written to Redis (those kept because Redis held a newer one are not counted).
    warmed: int = 0
    #: Asked-for ids unknown to the service: missing, inactive, or holding no role there.
    unknown: list[int] = field(default_factory=list)
    seconds: float = 0.0


def jittered_ttl(ttl: int) -> int:
    """``ttl`` less a random whole number of seconds, at most :data:`JITTER` of it."""
    return ttl - _random.randint(0, int(ttl * JITTER))


def count(service: Service, selection: Selection) -> int:
    """How many users ``selection`` names (ids asked for, or users it will select): for progress."""
    if selection.user_ids is not None:
        return len(set(selection.user_ids))
    query = select(func.count()).select_from(_selected(service.id, selection).subquery())
    return int(db.session.execute(query).scalar_one())


def warm(
    service_name: str,
    selection: Selection,
    *,
    progress: Callable[[int], None] | None = None,
    batch_size: int = BATCH_SIZE,
) -> WarmResult:
    """Warm ``service_name``'s entries for ``selection``; commits after each batch.

    :param progress: called with the number of users each finished batch covered.
    :raises ServiceNotRegistered: no such service.
    :raises RedisUnavailable: Redis failed (the values of the batches before stay written).
    """
    started = time.perf_counter()
    service = operations.get_service(service_name)
    service_id = service.id
    result = WarmResult(service.name)
    db.session.commit()  # each batch is then one short transaction of its own
    for batch in _batches(service_id, selection, batch_size):
        values = _values(service_id, batch)
        known = {attrs.user_id for attrs in values}
        result.unknown.extend(i for i in batch.asked if i not in known)
        written = _write(values)
        db.session.commit()  # releases the batch's row locks, now that Redis has the values
        if written is None:
            raise RedisUnavailable(
                f"Redis is unavailable: warmed {result.warmed} users of {service_name!r} "
                "before it failed"
            )
        result.warmed += written
        metrics.warmed(written)
        if progress is not None:
            progress(len(batch.asked))
    result.seconds = time.perf_counter() - started
    return result


def _write(values: Sequence[UserAttributes]) -> int | None:
    if not values:
        return 0
    ttl = int(current_app.config["RBAC_ABAC_CACHE_TTL"])
    landed = cache.write_batch([(attrs, jittered_ttl(ttl)) for attrs in values])
    return None if landed is None else sum(landed)


#: The user columns a value is built from.
_COLUMNS = (User.id, User.attributes)


@dataclass(frozen=True)
class _Batch:
    #: The ids this batch answers for (all asked-for ids, or the ones a query selected).
    asked: list[int]
    #: ``(id, attributes)`` of the active users among them, locked.
    users: list[tuple[int, Any]]
    #: The ids are every selected user from the first to the last: related rows can be read by
    #: id range, cheaper than a list of 1000 bound parameters.
    contiguous: bool


def _selected(service_id: int, selection: Selection) -> Select[tuple[int, Any]]:
    """Active users holding a role in the service (seen since ``active_since`` if given)."""
    query = select(*_COLUMNS).where(
        User.active.is_(True),
        User.id.in_(select(RoleAssignment.user_id).where(RoleAssignment.service_id == service_id)),
    )
    if selection.active_since is not None:
        query = query.where(User.last_seen_at >= selection.active_since)
    return query


def _batches(service_id: int, selection: Selection, size: int) -> Iterator[_Batch]:
    if selection.user_ids is not None:
        ids = sorted(set(selection.user_ids))
        for start in range(0, len(ids), size):
            asked = ids[start : start + size]
            possible = [i for i in asked if i <= MAX_DB_ID]  # larger ids cannot exist
            query = select(*_COLUMNS).where(User.id.in_(possible), User.active.is_(True))
            yield _Batch(asked, _locked(query), contiguous=False)
        return
    after = 0
    while True:
        users = _locked(_selected(service_id, selection).where(User.id > after).limit(size))
        if not users:
            return
        after = users[-1][0]
        yield _Batch([user_id for user_id, _ in users], users, contiguous=True)


def _locked(query: Select[tuple[int, Any]]) -> list[tuple[int, Any]]:
    query = query.order_by(User.id).with_for_update(of=User)
    return [(row[0], row[1]) for row in db.session.execute(query)]


def _values(service_id: int, batch: _Batch) -> list[UserAttributes]:
    """The values of the batch's users in the service, from three bulk reads; users without a
    role there are left out."""
    if not batch.users:
        return []
    ids = [user_id for user_id, _ in batch.users]
    roles_of = RoleAssignment.user_id
    versions_of = UserServiceVersion.user_id
    if batch.contiguous:
        which_roles = roles_of.between(ids[0], ids[-1])
        which_versions = versions_of.between(ids[0], ids[-1])
    else:
        which_roles, which_versions = roles_of.in_(ids), versions_of.in_(ids)
    roles: dict[int, list[str]] = {}
    for user_id, role in db.session.execute(
        select(RoleAssignment.user_id, RoleAssignment.role).where(
            RoleAssignment.service_id == service_id, which_roles
        )
    ):
        roles.setdefault(user_id, []).append(role)
    versions = {
        user_id: version
        for user_id, version in db.session.execute(
            select(UserServiceVersion.user_id, UserServiceVersion.version).where(
                UserServiceVersion.service_id == service_id, which_versions
            )
        )
    }
    # Read after the users were locked: see the module's docstring.
    service = db.session.get(Service, service_id, populate_existing=True)
    if service is None:  # deleted meanwhile: nobody is known to it any more
        return []
    values = []
    for user_id, attributes in batch.users:
        held = roles.get(user_id)
        if not held:
            continue
        attrs = operations.value_from_rows(
            user_id, attributes, service, held, int(versions.get(user_id) or 0)
        )
        if attrs.roles:
            values.append(attrs)
    return values

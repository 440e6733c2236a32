"""Bring the database to the latest schema revision: create it, adopt an old one, or upgrade it.

The schema is Alembic's (``idp_app/migrations/``, run through Flask-Migrate); ``init-db`` calls
:func:`upgrade`, which handles the three databases an operator may point the IdP at:

- an empty one: ``upgrade head`` creates every table (``create_all()`` is never used: it cannot
  alter a table, and a schema it made cannot be told apart from a half-upgraded one);
- one made by ``init-db`` before migrations existed (``create_all()``, no ``alembic_version``):
  it must hold revision ``0001``'s tables and columns (:data:`LEGACY_TABLES`); it is stamped at
  ``0001``, its rows untouched, then upgraded. Revision ``0002`` adds only the objects such a
  database lacks, so one that got ``sync_outbox`` or ``signing_keys`` from a later
  ``create_all()``, or the columns by hand, is adopted the same way;
- a migrated one: ``upgrade head``, which does nothing when it is current.

A database with some of the IdP's tables but not revision ``0001``'s complete set is refused
(:class:`SchemaError`), never guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from flask import current_app
from sqlalchemy import inspect

from .extensions import db

#: The revision that describes the schema ``create_all()`` made before migrations.
LEGACY_REVISION = "0001"
#: Revision ``0001``'s tables and their columns, by which such a database is recognised.
LEGACY_TABLES: dict[str, frozenset[str]] = {
    "users": frozenset({"id", "username", "password_hash", "active", "attributes", "created_at"}),
    "services": frozenset({"id", "name", "manifest", "created_at"}),
    "service_tokens": frozenset({"id", "service_id", "token_hash", "created_at"}),
    "role_assignments": frozenset({"id", "user_id", "service_id", "role"}),
    "user_service_versions": frozenset({"user_id", "service_id", "version"}),
}


class SchemaError(Exception):
    """The database cannot be brought to the latest revision; the message says why."""


@dataclass(frozen=True)
class Upgrade:
    """What :func:`upgrade` did.

    :param before: the revision the upgrade started from: ``None`` for an empty database,
        :data:`LEGACY_REVISION` for one made before migrations (then ``adopted`` is true)
    :param after: the revision it is at now, the latest one
    :param adopted: it was made by ``create_all()`` and has been stamped at
        :data:`LEGACY_REVISION` before the upgrade
    """

    before: str | None
    after: str
    adopted: bool = False


def head() -> str:
    """The latest revision in the migrations directory."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    if revision is None:  # pragma: no cover - the package ships its revisions
        raise SchemaError("no migration found")
    return revision


def current() -> str | None:
    """The revision the database is stamped at; ``None`` when it has no ``alembic_version``."""
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade() -> Upgrade:
    """Create, adopt or upgrade the app's database (see the module's docstring); idempotent.

    :raises SchemaError: the database holds part of the IdP's tables without a revision, or a
        revision this IdP does not know (a newer release migrated it)
    """
    with db.engine.connect() as connection:
        before = MigrationContext.configure(connection).get_current_revision()
        inspector = inspect(connection)
        tables = {
            table: frozenset(column["name"] for column in inspector.get_columns(table))
            for table in inspector.get_table_names()
        }
    config = _config()
    adopted = False
    if before is None and tables.keys() & (LEGACY_TABLES.keys() | db.metadata.tables.keys()):
        _check_legacy(tables)
        command.stamp(config, LEGACY_REVISION)
        before, adopted = LEGACY_REVISION, True
    try:
        command.upgrade(config, "head")
    except CommandError as exc:
        raise SchemaError(
            f"cannot upgrade the database from revision {before}: {exc} "
            "(was it migrated by a newer release of the IdP?)"
        ) from None
    return Upgrade(before=before, after=head(), adopted=adopted)


def _check_legacy(tables: dict[str, frozenset[str]]) -> None:
    missing: list[str] = []
    for table, columns in LEGACY_TABLES.items():
        if table not in tables:
            missing.append(table)
        else:
            missing.extend(f"{table}.{column}" for column in sorted(columns - tables[table]))
    if missing:
        raise SchemaError(
            "the database has some of the IdP's tables but no alembic_version, and lacks "
            f"{', '.join(missing)} of revision {LEGACY_REVISION}: it was not made by init-db, "
            "refusing to adopt it"
        )


def _config() -> Config:
    """Flask-Migrate's Alembic configuration for the current app (its migrations directory)."""
    config: Config = current_app.extensions["migrate"].migrate.get_config()
    return config

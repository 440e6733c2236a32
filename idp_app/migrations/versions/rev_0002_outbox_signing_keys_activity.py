"""Outbox, signing keys, services.attributes, users.last_seen_at (added before migrations).

What the models gained after revision ``0001`` and before migrations existed:

- ``sync_outbox`` (:class:`idp_app.models.OutboxEntry`), the durable delivery queue;
- ``signing_keys`` (:class:`idp_app.models.SigningKey`), the keys tokens are signed with;
- ``services.attributes``, the attribute names a service sees (NULL: all);
- ``users.last_seen_at`` and its index, for cache warming by recent activity.

Each step runs only if its object is missing. Databases adopted at revision ``0001`` may already
have some of them: an ``init-db`` of that time created the new tables (``create_all()`` adds
tables, never columns), and the release notes told operators to add the columns by hand. Offline
(``flask db upgrade --sql``) nothing can be inspected, so the SQL creates everything.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.engine import Inspector

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


class _Present:
    """What the database already has (nothing, when generating SQL offline)."""

    def __init__(self) -> None:
        self.inspector: Inspector | None = (
            None if context.is_offline_mode() else sa.inspect(op.get_bind())
        )

    def table(self, name: str) -> bool:
        return self.inspector is not None and self.inspector.has_table(name)

    def column(self, table: str, name: str) -> bool:
        return self.inspector is not None and any(
            column["name"] == name for column in self.inspector.get_columns(table)
        )

    def index(self, table: str, name: str) -> bool:
        return self.inspector is not None and any(
            index["name"] == name for index in self.inspector.get_indexes(table)
        )


def upgrade() -> None:
    present = _Present()
    if not present.table("sync_outbox"):
        op.create_table(
            "sync_outbox",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("user_id", sa.Integer(), nullable=False),
            sa.Column("service_name", sa.String(length=64), nullable=True),
            sa.Column("version", sa.BigInteger(), nullable=True),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        _index_outbox()
    elif not present.index("sync_outbox", "ix_sync_outbox_user_id"):
        _index_outbox()
    if not present.table("signing_keys"):
        op.create_table(
            "signing_keys",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("kid", sa.String(length=64), nullable=False),
            sa.Column("algorithm", sa.String(length=16), nullable=False),
            sa.Column("private_key_pem", sa.Text(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("kid"),
        )
    if not present.column("services", "attributes"):
        with op.batch_alter_table("services") as batch:
            batch.add_column(sa.Column("attributes", sa.JSON(none_as_null=True), nullable=True))
    if not present.column("users", "last_seen_at"):
        with op.batch_alter_table("users") as batch:
            batch.add_column(sa.Column("last_seen_at", sa.Float(), nullable=True))
        _index_last_seen()
    elif not present.index("users", "ix_users_last_seen_at"):
        _index_last_seen()


def _index_outbox() -> None:
    op.create_index(op.f("ix_sync_outbox_user_id"), "sync_outbox", ["user_id"], unique=False)


def _index_last_seen() -> None:
    op.create_index(op.f("ix_users_last_seen_at"), "users", ["last_seen_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_users_last_seen_at"), table_name="users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("last_seen_at")
    with op.batch_alter_table("services") as batch:
        batch.drop_column("attributes")
    op.drop_table("signing_keys")
    op.drop_index(op.f("ix_sync_outbox_user_id"), table_name="sync_outbox")
    op.drop_table("sync_outbox")

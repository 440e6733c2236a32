"""The outbox's ``patch`` column: the fields a change touched, for partial delivery.

``sync_outbox.patch`` (:attr:`idp_app.models.OutboxEntry.patch`) holds, per service, the fields a
change touched (one attribute, one service's roles) so its delivery can patch the cached values
in place. NULL (every row written before this revision, too) means "rebuild from the database",
which is what delivery did before.

The column is added only if missing: a database adopted at ``0001`` whose ``sync_outbox`` was made
by a later ``init-db`` (``create_all()`` from the current models) has it already. Offline
(``flask db upgrade --sql``) nothing can be inspected, so the SQL adds it.

Revision ID: 0003p
Revises: 0003c
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0003p"
down_revision = "0003c"
branch_labels = None
depends_on = None


def _has_column() -> bool:
    if context.is_offline_mode():
        return False
    columns = sa.inspect(op.get_bind()).get_columns("sync_outbox")
    return any(column["name"] == "patch" for column in columns)


def upgrade() -> None:
    if _has_column():
        return
    with op.batch_alter_table("sync_outbox") as batch:
        batch.add_column(sa.Column("patch", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_outbox") as batch:
        batch.drop_column("patch")

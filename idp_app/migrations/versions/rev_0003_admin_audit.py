"""The audit table and ``users.updated_at``, for the admin API.

- ``audit_entries`` (:class:`idp_app.models.AuditEntry`): who changed what, when, before and after;
- ``users.updated_at``: when an admin change last touched the user; existing rows get their
  ``created_at`` (the last change known).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.Column("before", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("after", sa.JSON(none_as_null=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_audit_entries_user_id"), "audit_entries", ["user_id"], unique=False)
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE users SET updated_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("updated_at")
    op.drop_index(op.f("ix_audit_entries_user_id"), table_name="audit_entries")
    op.drop_table("audit_entries")

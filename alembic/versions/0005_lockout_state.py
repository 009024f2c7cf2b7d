"""lockout state in the database: the guess budget per source and hour, the two-factor backoff per device

Shared by every node on the database, so two nodes never each grant a source the whole budget
(docs/decisions.md, "A guess budget per source, a backoff per registered number").

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lockout_sources",
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("guesses", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("subject", "hour", name=op.f("pk_lockout_sources")),
    )
    op.create_table(
        "lockout_devices",
        sa.Column("device_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_lockout_devices")),
    )
    op.create_index(op.f("ix_lockout_devices_last_failure_ms"), "lockout_devices", ["last_failure_ms"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_lockout_devices_last_failure_ms"), table_name="lockout_devices")
    op.drop_table("lockout_devices")
    op.drop_table("lockout_sources")

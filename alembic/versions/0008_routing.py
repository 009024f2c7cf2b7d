"""routing (CALLING.md, "Where an admitted call goes", "Several nodes", "Call records"): each device's routing
identity and home, the call records of both directions (method, caller as delivered, destination, node), and the
guard's shared leases and rolling-day spends

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    ("devices", "context", 80),
    ("devices", "callerid", 128),
    ("devices", "home", 64),
    ("call_records", "method", 16),
    ("call_records", "caller", 32),
    ("call_records", "destination", 20),
    ("call_records", "node", 64),
)


def upgrade() -> None:
    # plain ALTER TABLE ADD / DROP COLUMN (SQLite 3.35+ has both), never a batch copy of the table: on SQLite with
    # foreign keys on, dropping the old `devices` table in a copy would cascade into key_epochs, call_intents, ...
    for table, name, length in _COLUMNS:
        op.add_column(table, sa.Column(name, sa.String(length=length), nullable=True))
    op.create_index(
        "ix_call_records_device_id_started_at", "call_records", ["device_id", "started_at"], unique=False
    )
    op.create_table(
        "call_leases",
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("started_ms", sa.BigInteger(), nullable=False),
        sa.Column("renewed_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("call_id", name=op.f("pk_call_leases")),
    )
    op.create_index(op.f("ix_call_leases_device_id"), "call_leases", ["device_id"], unique=False)
    op.create_table(
        "route_spends",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_route_spends")),
    )
    op.create_index("ix_route_spends_device_id_at_ms", "route_spends", ["device_id", "at_ms"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_route_spends_device_id_at_ms", table_name="route_spends")
    op.drop_table("route_spends")
    op.drop_index(op.f("ix_call_leases_device_id"), table_name="call_leases")
    op.drop_table("call_leases")
    op.drop_index("ix_call_records_device_id_started_at", table_name="call_records")
    for table, name, _length in reversed(_COLUMNS):
        op.drop_column(table, name)

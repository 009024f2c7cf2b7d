"""intents (CALLING.md, "Intent"): call intents spent by one conditional UPDATE, and the noise records of calls from
a registered number that found no live intent (the racing spoofer's defence), shared by every node

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "call_intents",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("call_id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("access_number", sa.String(length=20), nullable=False),
        sa.Column("destination", sa.String(length=20), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("spent_ms", sa.BigInteger(), nullable=True),
        sa.Column("spent_channel", sa.String(length=128), nullable=True),
        sa.Column("cancelled_ms", sa.BigInteger(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_call_intents_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_intents")),
        sa.UniqueConstraint("call_id", name=op.f("uq_call_intents_call_id")),
    )
    op.create_index("ix_call_intents_device_id_created_ms", "call_intents", ["device_id", "created_ms"], unique=False)
    op.create_index(op.f("ix_call_intents_expires_ms"), "call_intents", ["expires_ms"], unique=False)
    op.create_table(
        "intent_noise",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=128), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_intent_noise_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intent_noise")),
    )
    op.create_index("ix_intent_noise_device_id_at_ms", "intent_noise", ["device_id", "at_ms"], unique=False)
    op.create_index(op.f("ix_intent_noise_at_ms"), "intent_noise", ["at_ms"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_intent_noise_at_ms"), table_name="intent_noise")
    op.drop_index("ix_intent_noise_device_id_at_ms", table_name="intent_noise")
    op.drop_table("intent_noise")
    op.drop_index(op.f("ix_call_intents_expires_ms"), table_name="call_intents")
    op.drop_index("ix_call_intents_device_id_created_ms", table_name="call_intents")
    op.drop_table("call_intents")

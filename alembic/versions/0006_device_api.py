"""device API: one-time activation codes (hashed), request nonces shared by every node, per-call key vouchers

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "activation_codes",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("used_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_activation_codes_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_activation_codes")),
    )
    op.create_index(op.f("ix_activation_codes_device_id"), "activation_codes", ["device_id"], unique=False)
    op.create_index(op.f("ix_activation_codes_expires_ms"), "activation_codes", ["expires_ms"], unique=False)
    op.create_table(
        "api_nonces",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "nonce", name=op.f("pk_api_nonces")),
    )
    op.create_index(op.f("ix_api_nonces_expires"), "api_nonces", ["expires"], unique=False)
    op.create_table(
        "call_vouchers",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("literal_prefix", sa.String(length=20), nullable=False),
        sa.Column("significant_len", sa.Integer(), nullable=False),
        sa.Column("match_tag", sa.String(length=64), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("released_ms", sa.BigInteger(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_call_vouchers_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_vouchers")),
    )
    op.create_index(op.f("ix_call_vouchers_call_id"), "call_vouchers", ["call_id"], unique=False)
    op.create_index(op.f("ix_call_vouchers_device_id"), "call_vouchers", ["device_id"], unique=False)
    op.create_index(op.f("ix_call_vouchers_expires_ms"), "call_vouchers", ["expires_ms"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_call_vouchers_expires_ms"), table_name="call_vouchers")
    op.drop_index(op.f("ix_call_vouchers_device_id"), table_name="call_vouchers")
    op.drop_index(op.f("ix_call_vouchers_call_id"), table_name="call_vouchers")
    op.drop_table("call_vouchers")
    op.drop_index(op.f("ix_api_nonces_expires"), table_name="api_nonces")
    op.drop_table("api_nonces")
    op.drop_index(op.f("ix_activation_codes_expires_ms"), table_name="activation_codes")
    op.drop_index(op.f("ix_activation_codes_device_id"), table_name="activation_codes")
    op.drop_table("activation_codes")

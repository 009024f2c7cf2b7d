"""drop call_keys.nonce

HPKE derives the AEAD nonce from its key schedule, so the column was always written empty.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call_keys", schema=None) as batch_op:
        batch_op.drop_column("nonce")


def downgrade() -> None:
    # as in 0001: LargeBinary, NOT NULL. Existing rows get the empty value the application always wrote, so the
    # column is added nullable, filled, then made NOT NULL.
    with op.batch_alter_table("call_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("nonce", sa.LargeBinary(), nullable=True))
    call_keys = sa.table("call_keys", sa.column("nonce", sa.LargeBinary()))
    op.execute(call_keys.update().values(nonce=b""))
    with op.batch_alter_table("call_keys", schema=None) as batch_op:
        batch_op.alter_column("nonce", existing_type=sa.LargeBinary(), nullable=False)

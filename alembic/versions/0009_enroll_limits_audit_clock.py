"""issue 22 (sec2): enrollment attempts per client network shared by every node; the audit row's time from the
database's clock

`enroll_limits` (M2): one row per client network, the time its enrollment allowance is whole again
(`store.enroll_limits`). `audit_events.reported_at` and, on PostgreSQL, a BEFORE INSERT trigger (L5): the row's
`created_at` is the database's `clock_timestamp()` whatever the writer sent, so an INSERT-only role cannot backdate
an event; the writer's own time is kept in `reported_at` (an event spooled during an outage keeps when it happened).
SQLite has no such trigger: whoever can write its file can rewrite anything in it.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PG_UP = (
    "CREATE FUNCTION audit_events_stamp() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN NEW.reported_at := NEW.created_at; NEW.created_at := clock_timestamp(); RETURN NEW; END $$",
    "CREATE TRIGGER audit_events_stamp BEFORE INSERT ON audit_events "
    "FOR EACH ROW EXECUTE FUNCTION audit_events_stamp()",
)
_PG_DOWN = (
    "DROP TRIGGER IF EXISTS audit_events_stamp ON audit_events",
    "DROP FUNCTION IF EXISTS audit_events_stamp()",
)


def upgrade() -> None:
    op.create_table(
        "enroll_limits",
        sa.Column("network", sa.String(length=64), nullable=False),
        sa.Column("tat_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("network", name=op.f("pk_enroll_limits")),
    )
    op.create_index(op.f("ix_enroll_limits_tat_ms"), "enroll_limits", ["tat_ms"], unique=False)
    # plain ALTER TABLE (SQLite 3.35+), never a batch copy: a copy would drop the append-only triggers
    op.add_column("audit_events", sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for statement in _PG_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _PG_DOWN:
            op.execute(statement)
    op.drop_column("audit_events", "reported_at")
    op.drop_index(op.f("ix_enroll_limits_tat_ms"), table_name="enroll_limits")
    op.drop_table("enroll_limits")

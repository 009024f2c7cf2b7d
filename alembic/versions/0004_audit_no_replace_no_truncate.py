"""audit_events: also refuse SQLite INSERT OR REPLACE / REPLACE INTO and PostgreSQL TRUNCATE

0001's triggers stop UPDATE and DELETE, but SQLite's REPLACE deletes the conflicting row without firing the delete
trigger, and TRUNCATE fires no row trigger at all. An INSERT-only database role for the service (README, Security
notes) closes the rest (DROP, ALTER ... DISABLE TRIGGER need the table's owner).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE = (
    "CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events "
    "WHEN EXISTS (SELECT 1 FROM audit_events WHERE id = NEW.id) "
    "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
)
_PG = (
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"
)


def upgrade() -> None:
    op.execute(_PG if op.get_bind().dialect.name == "postgresql" else _SQLITE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_replace")

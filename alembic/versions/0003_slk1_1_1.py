"""SLK1 1.1: key_id tombstones, remembered key settings, registered numbers in E.164

- `key_ids`: every key_id ever issued (a rotation keeps the old one as a tombstone), filled from `devices`.
- `settings`: the period and t0 the devices' keys were made with (recorded at the next start, checked at every start).
- `devices.mobile_number` rewritten to E.164 ('+' and digits). 1.0 stored the digits of what the administrator typed
  (`--number MSISDN`, '+' dropped); read as: with `keys.default_country_code` C configured, a number starting with C
  is international and any other is national (+C in front); without C, a number that starts with a known country
  code is international. A number starting with 0 (a trunk or international prefix, or part of an Italian number)
  or that none of this fits is kept as it was and listed in the output: it is compared digit for digit, as in 1.0,
  until an administrator corrects it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import context, op
from asterisk_securelink.core.compare import country_code_of
from asterisk_securelink.core.numbers import normalize

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

E164_MAX_DIGITS = 15
_devices = sa.table(
    "devices",
    sa.column("id", sa.Integer()),
    sa.column("key_id", sa.String(64)),
    sa.column("mobile_number", sa.String(20)),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def legacy_to_e164(stored: str, default_cc: str) -> str | None:
    """A 1.0 `mobile_number` in E.164, or None when it cannot be read as one (see the module docstring)."""
    digits = normalize(stored)
    if digits is None:
        return None
    if stored.strip().startswith("+"):
        e164 = digits
    elif digits.startswith("0"):
        return None  # a trunk or international prefix, or (Italy) part of the number: not to be guessed
    elif default_cc and not (digits.startswith(default_cc) and country_code_of(digits) == default_cc):
        e164 = default_cc + digits
    else:
        e164 = digits
    if country_code_of(e164) is None or not 8 <= len(e164) <= E164_MAX_DIGITS:
        return None
    return "+" + e164


def _note(text: str) -> None:
    """Into the list `store.migrations.upgrade` returns (the CLI prints it); printed when run by `alembic`."""
    notes = context.config.attributes.get("notes")
    if isinstance(notes, list):
        notes.append(text)
    else:
        print(text)


def upgrade() -> None:
    op.create_table(
        "key_ids",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_key_ids")),
    )
    op.create_table(
        "settings",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_settings")),
    )
    bind = op.get_bind()
    rows = bind.execute(sa.select(_devices.c.id, _devices.c.key_id, _devices.c.mobile_number, _devices.c.created_at))
    devices = list(rows)
    key_ids = sa.table(
        "key_ids",
        sa.column("key_id", sa.String(64)),
        sa.column("device_id", sa.Integer()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    if devices:
        op.bulk_insert(key_ids, [{"key_id": d.key_id, "device_id": d.id, "created_at": d.created_at} for d in devices])
    default_cc = str(
        context.config.attributes.get("default_country_code")
        or os.environ.get("SECURELINK_KEYS_DEFAULT_COUNTRY_CODE", "")
    ).strip()
    changed, kept = 0, []
    for d in devices:
        e164 = legacy_to_e164(d.mobile_number, default_cc)
        if e164 is None:
            kept.append(f"device {d.id} {d.mobile_number!r}")
        elif e164 != d.mobile_number:
            bind.execute(_devices.update().where(_devices.c.id == d.id).values(mobile_number=e164))
            changed += 1
    if changed:
        how = f"default country code {default_cc}" if default_cc else "no default country code"
        _note(f"0003: {changed} registered number(s) rewritten to E.164 ({how})")
    if kept:
        _note(
            f"0003: {len(kept)} registered number(s) could not be read as E.164 and were kept unchanged: "
            f"{', '.join(kept)}; correct them (two-factor compares registered numbers in E.164)"
        )


def downgrade() -> None:
    bind = op.get_bind()
    for d in list(bind.execute(sa.select(_devices.c.id, _devices.c.mobile_number))):
        if d.mobile_number.startswith("+"):
            bind.execute(_devices.update().where(_devices.c.id == d.id).values(mobile_number=d.mobile_number[1:]))
    op.drop_table("settings")
    op.drop_table("key_ids")

"""The README's least-privilege PostgreSQL role runs the service (issue 22, M6).

The schema is migrated by the database's owner; the README's GRANT block is then run literally, and `securelink run`
connects as that role: a call is admitted and routed (leases, call records), replayed and guessed (lockout rows), and
the role still cannot rewrite the audit. Before the grants were completed every call got `error`.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Home, add_devices, fresh_window, new_home, no_channels_left, start_app, stop_app, wait_until
from sipp import run_uac
from support.pg import empty_pg_database

README = Path(__file__).resolve().parents[2] / "README.md"
ANI = "100"


def readme_grants() -> str:
    """The SQL block under "Security notes" that creates `securelink_app`, as the README prints it."""
    blocks = re.findall(r"```sql\n(.*?)```", README.read_text(), re.S)
    [block] = [b for b in blocks if "CREATE ROLE securelink_app" in b]
    return block


def split_sql(block: str) -> list[str]:
    lines = [line.split("--", 1)[0] for line in block.splitlines()]
    return [s.strip() for s in " ".join(lines).split(";") if s.strip()]


async def run_as(url: str, *statements: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username, database=u.database)
    try:
        for s in statements:
            await conn.execute(s)
    finally:
        await conn.close()


@pytest.fixture
def least(tmp_path: Path) -> Iterator[tuple[Home, str, str]]:
    """A home migrated by the owner, then switched to a fresh role holding exactly the README's grants."""
    role = "securelink_app_" + secrets.token_hex(4)
    with empty_pg_database() as owner_url:
        home = new_home(tmp_path, db_url=owner_url)  # `securelink init` migrates as the owner
        statements = [s.replace("securelink_app", role) for s in split_sql(readme_grants())]
        asyncio.run(run_as(owner_url, *statements))
        role_url = re.sub(r"postgresql://[^@/]*@", f"postgresql://{role}@", owner_url)
        try:
            yield home, owner_url, role_url
        finally:
            asyncio.run(run_as(owner_url, f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"'))


def test_the_readme_role_admits_routes_and_cannot_rewrite_the_audit(least: tuple[Home, str, str]) -> None:
    home, _owner_url, role_url = least
    [d] = add_devices(home, 1, "lp")  # enrolled by the administrator (the owner)
    config = home.path / "securelink.toml"
    text = config.read_text()
    config.write_text(re.sub(r'(?m)^url = ".*"$', f'url = "{role_url}"', text, count=1))
    run, agi = start_app(home)
    try:
        fresh_window()
        key = home.key(d)
        wrong = str((int(key) + 1) % 10**10).zfill(10)
        results = run_uac([(key, ANI), (key, ANI), (wrong, ANI)], rate=2, concurrency=1)
        assert [r.status_code for r in results] == [200, 403, 403]
        wait_until(lambda: len(home.audit("verify")) == 3, 10, "three verdicts")
        assert [e["result"] for e in home.audit("verify")] == ["admitted", "replayed", "mismatch"]
        no_channels_left(20)
        records = home.cli("calls", "list", "--json").stdout
        assert '"inbound"' in records and str(d["id"]) in records  # the routed call's record, written as the role
    finally:
        stop_app(home, run, agi)
    assert "error" not in {e["result"] for e in home.audit("verify")}
    with pytest.raises(Exception, match="permission denied"):
        asyncio.run(run_as(role_url, "UPDATE audit_events SET action = 'x'"))
    with pytest.raises(Exception, match="must be owner"):
        asyncio.run(run_as(role_url, "DROP TABLE audit_events"))

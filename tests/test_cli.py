"""The `securelink` command as an administrator runs it: real processes, a real SQLite file."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from support.cli import run

from asterisk_securelink.core.provisioning import parse


@pytest.fixture
def home(tmp_path: Path) -> Path:
    run(tmp_path, "init")
    return tmp_path


def add(home: Path, *extra: str) -> dict[str, object]:
    out = json.loads(run(home, "device", "add", "Alice iPhone", "--number", "+1 555 010 0001", *extra, "--json").stdout)
    assert isinstance(out, dict)
    return out


def test_init_creates_config_key_and_schema(home: Path) -> None:
    assert (home / "securelink.toml").is_file()
    assert stat.S_IMODE((home / "master.key").stat().st_mode) == 0o600
    assert (home / "securelink.sqlite3").is_file()
    again = run(home, "init")  # idempotent: keeps the key
    assert "kept existing master key" in again.stdout


def test_round_trip_admitted_replayed_mismatch_revoked(home: Path) -> None:
    dev = add(home)
    assert dev["status"] == "provisioned"
    run(home, "device", "register", str(dev["id"]))
    key = run(home, "key", "current", str(dev["id"])).stdout.strip()
    assert run(home, "verify", key).stdout.strip() == f"admitted device {dev['id']}"
    assert run(home, "verify", key).stdout.strip() == f"replayed device {dev['id']}"
    old = run(home, "key", "current", str(dev["id"]), "--at", str(time.time() - 60)).stdout.strip()
    assert run(home, "verify", old).stdout.strip() == "mismatch"
    run(home, "device", "revoke", str(dev["key_id"]), "--reason", "lost phone")
    fresh = run(home, "key", "current", str(dev["id"]), "--at", str(time.time() + 30)).stdout.strip()
    verdict = json.loads(run(home, "verify", fresh, "--at", str(time.time() + 30), "--json").stdout)
    assert verdict["verdict"] == "mismatch"  # a revoked device's key gets what any wrong key gets (no oracle)


def test_provisioning_uri_carries_the_secret_once(home: Path) -> None:
    dev = add(home, "--desk-endpoint", "PJSIP/1001")
    prov = parse(str(dev["provisioning_uri"]))
    assert prov.key_id == dev["key_id"] and prov.period == 30
    secret_b64 = str(dev["provisioning_uri"]).split("secret=")[1].split("&")[0]
    listing = run(home, "device", "list", "--json").stdout + run(home, "device", "show", "1").stdout
    audit = run(home, "audit", "list", "--json").stdout
    for text in (listing, audit):
        assert secret_b64 not in text and prov.secret.hex() not in text
    db = (home / "securelink.sqlite3").read_bytes()
    assert prov.secret not in db and secret_b64.encode() not in db


def test_key_id_from_uid_is_stable_and_unique(home: Path) -> None:
    a = add(home, "--key-id-from-uid", "IMEI-35-000000-000000-0")
    uid = "IMEI-35-000000-000000-0"
    p = run(home, "device", "add", "Again", "--number", "+15550100009", "--key-id-from-uid", uid, check=False)
    assert p.returncode == 2 and "already" in p.stderr
    assert "IMEI" not in str(a["key_id"])


def test_rotate_invalidates_old_keys(home: Path) -> None:
    dev = add(home)
    run(home, "device", "register", "1")
    old = run(home, "key", "current", "1").stdout.strip()
    rotated = json.loads(run(home, "device", "rotate", "1", "--json").stdout)
    assert rotated["key_id"] != dev["key_id"] and "provisioning_uri" in rotated
    assert run(home, "verify", old).stdout.strip() == "mismatch"
    new = run(home, "key", "current", "1").stdout.strip()
    assert run(home, "verify", new).stdout.strip() == "admitted device 1"


def test_status_transitions_and_audit(home: Path) -> None:
    add(home)
    run(home, "device", "suspend", "1")
    assert run(home, "device", "register", "1", check=False).returncode == 2
    run(home, "device", "resume", "1")
    actions = [e["action"] for e in json.loads(run(home, "audit", "list", "--json").stdout)]
    assert actions == ["init", "init", "device.add", "device.suspend", "device.resume"][-len(actions) :]
    assert "device.suspend" in actions and "device.resume" in actions


def test_resume_returns_a_device_to_what_it_was(home: Path) -> None:
    add(home)  # 1: suspended before it ever registered
    add(home, "--key-id-from-uid", "second")  # 2: registered, then suspended
    run(home, "device", "register", "2")
    for device in ("1", "2"):
        run(home, "device", "suspend", device)
    back = {d: json.loads(run(home, "device", "resume", d, "--json").stdout) for d in ("1", "2")}
    assert (back["1"]["status"], back["1"]["registered_at"]) == ("provisioned", None)
    assert back["2"]["status"] == "registered" and back["2"]["registered_at"]
    p = run(home, "device", "resume", "1", check=False)  # no longer suspended
    assert p.returncode == 2 and "provisioned" in p.stderr


def test_verify_at_in_the_future_is_refused_and_spends_nothing(home: Path) -> None:
    """`verify --at` beyond the live window would spend a key the device has not used yet (and, single use being
    monotonic, every key before it): refused, and the device's present key still works afterwards."""
    add(home)
    run(home, "device", "register", "1")
    later = str(time.time() + 300)
    future_key = run(home, "key", "current", "1", "--at", later).stdout.strip()
    p = run(home, "verify", future_key, "--at", later, check=False)
    assert p.returncode == 2 and "future" in p.stderr and "Traceback" not in p.stderr
    assert "verify" not in [e["action"] for e in json.loads(run(home, "audit", "list", "--json").stdout)]
    now_key = run(home, "key", "current", "1").stdout.strip()
    assert run(home, "verify", now_key).stdout.strip() == "admitted device 1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["device", "add", "X", "--number", "abc"], "--number"),
        (["device", "add", "X", "--number", "+15550100009", "--desk-endpoint", "no-slash"], "--desk-endpoint"),
        (["device", "show", "999"], "no device"),
        (["device", "revoke", "1", "--reason", " "], "--reason"),
        (["key", "current", "1", "--direction", "sideways"], "invalid choice"),
        (["audit", "list", "--since", "yesterday-ish"], "--since"),
        (["device"], "required"),
        (["audit", "list", "--since", "99999999999d"], "before year 1"),
        (["calls", "list", "--since", "99999999999d"], "before year 1"),
        (["audit", "list", "--limit", "-5"], "--limit"),
        (["device", "show", "99999999999999999999999"], "no device"),
        (["device", "add", "X", "--number", "+15550100009", "--key-id-from-uid", "\udcff\udcfe"], "UTF-8"),
        (["verify", "12345", "--at", "nan"], "--at"),
        (["verify", "12345", "--at", "1e30"], "--at"),
        (["verify", "12345", "--at", "4000000000"], "future"),
        (["escrow", "keygen", "--private-key", "k", "--public-key", "/nonexistent/dir/k.pub"], "key pair"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(home: Path, args: list[str], message: str) -> None:
    add(home)
    before = run(home, "audit", "list", "--json").stdout
    p = run(home, *args, check=False)
    assert p.returncode == 2
    assert message in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert run(home, "audit", "list", "--json").stdout == before


def test_world_readable_master_key_is_refused(home: Path) -> None:
    os.chmod(home / "master.key", 0o644)
    p = run(home, "device", "add", "X", "--number", "+15550100009", check=False)
    assert p.returncode == 2 and "chmod 600" in p.stderr
    assert json.loads(run(home, "device", "list", "--json").stdout) == []


def test_unmigrated_database_is_reported(tmp_path: Path) -> None:
    (tmp_path / "securelink.toml").write_text('[database]\nurl = "sqlite:///empty.sqlite3"\n')
    p = run(tmp_path, "device", "list", check=False)
    assert p.returncode == 2 and "securelink db upgrade" in p.stderr
    run(tmp_path, "db", "upgrade")
    assert run(tmp_path, "device", "list", "--json").stdout.strip() == "[]"


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "securelink.toml").write_text("[keys]\nperiod = 90\n")
    p = run(tmp_path, "device", "list", check=False)
    assert p.returncode == 2 and "keys.period" in p.stderr


def test_escrow_keygen_decrypt_list_purge(home: Path) -> None:
    import asyncio

    from asterisk_securelink import config
    from asterisk_securelink.callkeys.book import CallBook
    from asterisk_securelink.store.store import Store

    out = json.loads(
        run(home, "escrow", "keygen", "--private-key", "esc.key", "--public-key", "esc.pub", "--json").stdout
    )
    assert stat.S_IMODE((home / "esc.key").stat().st_mode) == 0o600
    cfg = config.build({"escrow": {"public_key_file": "esc.pub"}}, {}, home)

    async def issue() -> bytes:
        store = Store.from_url(cfg.database_url)
        try:
            issued = await CallBook(cfg, store).issue_call_key("call-42", None, "outbound")
        finally:
            await store.close()
        assert issued is not None
        return issued.key

    key = asyncio.run(issue())
    listed = json.loads(run(home, "escrow", "list", "--json").stdout)
    assert [(r["call_id"], r["key_version"]) for r in listed] == [("call-42", out["key_version"])]
    assert key.hex() not in json.dumps(listed)
    no_reason = run(home, "escrow", "decrypt", "call-42", "--private-key", "esc.key", "--reason", " ", check=False)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    opened = json.loads(
        run(home, "escrow", "decrypt", "call-42", "--private-key", "esc.key", "--reason", "case 7", "--json").stdout
    )
    assert opened[0]["key"] == key.hex()
    audit = json.loads(run(home, "audit", "list", "--action", "escrow.decrypt", "--json").stdout)
    assert audit[-1]["result"] == "ok" and audit[-1]["detail"]["reason"] == "case 7"
    assert key.hex() not in json.dumps(audit)
    assert json.loads(run(home, "escrow", "purge", "--json").stdout) == {"deleted": 0}
    assert json.loads(run(home, "calls", "list", "--json").stdout) == []


def test_escrow_keygen_never_leaves_half_a_pair(home: Path) -> None:
    p = run(home, "escrow", "keygen", "--private-key", "k.key", "--public-key", "missing/k.pub", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert sorted(x.name for x in home.iterdir() if x.name.startswith((".k", "k"))) == []
    run(home, "escrow", "keygen", "--private-key", "k.key", "--public-key", "k.pub")
    again = run(home, "escrow", "keygen", "--private-key", "k.key", "--public-key", "k2.pub", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr and not (home / "k2.pub").exists()


def test_verify_outbound_finds_the_key_in_the_device_window(home: Path) -> None:
    add(home)
    at = 59682345 * 30 + 10.0
    key = run(home, "key", "current", "1", "--direction", "outbound", "--at", str(at)).stdout.strip()

    def verify(when: float) -> dict[str, object]:
        out = run(home, "verify", key, "--direction", "outbound", "--at", str(when), "--json").stdout
        result = json.loads(out)
        assert isinstance(result, dict)
        return result

    for when in (at - 30, at, at + 30):  # the device accepts e-1, e, e+1 of its own clock
        assert verify(when) == {"verdict": "admitted", "device": 1, "epoch": 59682345}
    assert verify(at + 60)["verdict"] == "mismatch"
    assert verify(at - 60)["verdict"] == "mismatch"
    assert run(home, "verify", "no-number", "--direction", "outbound", "--json").stdout.count("malformed") == 1


def test_an_os_error_prints_its_message_and_the_file(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    p = run(tmp_path, "--config", "a-file/securelink.toml", "init", check=False)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "File exists" in p.stderr and "a-file" in p.stderr


def test_no_error_is_printed_as_a_bare_class_name() -> None:
    from asterisk_securelink.cli import describe

    assert describe(FileNotFoundError("alembic.ini not found next to the package")) == (
        "alembic.ini not found next to the package"
    )
    assert describe(OSError(13, "Permission denied", "/etc/x")) == "Permission denied: /etc/x"
    assert describe(KeyError("unknown")) == "unknown"
    assert describe(ValueError("first\nsecond")) == "first second"  # still one line
    for bare in (TimeoutError(), OSError(), RuntimeError()):
        assert describe(bare) != type(bare).__name__ and type(bare).__name__ in describe(bare)


def test_numbers_are_stored_in_e164_and_national_input_needs_a_default_country_code(home: Path) -> None:
    p = run(home, "device", "add", "X", "--number", "555 010 0002", check=False)
    assert p.returncode == 2 and "keys.default_country_code" in p.stderr
    assert add(home)["mobile_number"] == "+15550100001"  # "+1 555 010 0001"
    toml = (home / "securelink.toml").read_text()
    (home / "securelink.toml").write_text(toml.replace('default_country_code = ""', 'default_country_code = "1"'))
    out = json.loads(run(home, "device", "add", "Y", "--number", "(555) 010-0002", "--json").stdout)
    assert out["mobile_number"] == "+15550100002"
    p = run(home, "device", "add", "Z", "--number", "0555 010 0003", check=False)  # a 0 is not guessed at
    assert p.returncode == 2 and "international form" in p.stderr
    # SLK1 1.1 revision 2: one national trunk prefix (1 where the country code is 1) is removed (revision 1: refused)
    out = json.loads(run(home, "device", "add", "W", "--number", "1 555 010 0004", "--json").stdout)
    assert out["mobile_number"] == "+15550100004"
    p = run(home, "device", "add", "V", "--number", "+1555", check=False)  # revision 2: + and 8-15 digits
    assert p.returncode == 2 and "8-15 digits" in p.stderr


def test_provisioning_uri_carries_every_1_1_parameter(home: Path) -> None:
    toml = (home / "securelink.toml").read_text()
    toml = toml.replace("trunk_prefixes = []", 'trunk_prefixes = ["0", "011"]').replace(
        'mode = "ani"', 'mode = "dnis"\ndial_prefix = "8"'
    )
    (home / "securelink.toml").write_text(toml)
    uri = str(add(home)["provisioning_uri"])
    names = [part.split("=")[0] for part in uri.split("?", 1)[1].split("&")]
    want = ["v", "key_id", "secret", "period", "t0", "in", "out", "look_behind", "look_ahead", "trunk", "mode", "dial"]
    assert names == want  # each exactly once
    prov = parse(uri)
    assert "v=1.1&" in uri and "trunk=0%2C011" in uri
    assert (prov.trunk, prov.mode, prov.dial, prov.look_ahead) == (("0", "011"), "dnis", "8", 1)


def test_at_takes_seconds_with_a_fraction_as_integer_milliseconds(home: Path) -> None:
    add(home)
    for at, epoch in (("1790000000.5", 59666666), ("1790000029.999", 59666667), ("1790000030", 59666667)):
        out = json.loads(run(home, "key", "current", "1", "--at", at, "--json").stdout)
        assert out["epoch"] == epoch, at
    p = run(home, "key", "current", "1", "--at", "1.79e9", check=False)
    assert p.returncode == 2 and "--at" in p.stderr


def test_a_period_change_needs_rotate_all(home: Path) -> None:
    add(home)
    run(home, "device", "register", "1")
    key = run(home, "key", "current", "1").stdout.strip()
    assert run(home, "verify", key).stdout.strip() == "admitted device 1"  # records period 30, t0 0
    toml = (home / "securelink.toml").read_text().replace("period = 30", "period = 10")
    (home / "securelink.toml").write_text(toml)
    p = run(home, "verify", key, check=False)
    assert p.returncode == 2 and "rotate --all" in p.stderr and "period 30" in p.stderr
    p = run(home, "device", "rotate", check=False)
    assert p.returncode == 2 and "--all" in p.stderr
    rotated = json.loads(run(home, "device", "rotate", "--all", "--json").stdout)
    assert [r["id"] for r in rotated] == [1] and rotated[0]["old_key_id"] != rotated[0]["key_id"]
    assert parse(rotated[0]["provisioning_uri"]).period == 10
    new = run(home, "key", "current", "1").stdout.strip()
    assert run(home, "verify", new).stdout.strip() == "admitted device 1"
    assert run(home, "verify", key).stdout.strip() == "mismatch"  # the old key id's keys no longer work


def test_device_add_slk12_issues_a_1_2_uri_with_the_access_number_and_refuses_without_one(home: Path) -> None:
    p = run(home, "device", "add", "Old", "--number", "+15550100007", "--slk12", check=False)
    assert p.returncode != 0 and "--slk12 needs [calling] access_numbers" in p.stderr
    assert json.loads(run(home, "device", "list", "--json").stdout) == []  # refused before anything changed
    cfg = home / "securelink.toml"
    cfg.write_text(cfg.read_text() + '\n[calling]\naccess_numbers = ["+12155550400"]\n')
    dev = add(home, "--slk12")
    prov = parse(str(dev["provisioning_uri"]))
    assert (prov.version, prov.mode, prov.access) == ("1.2", "intent", "+12155550400")
    other = json.loads(run(home, "device", "add", "Bob", "--number", "+15550100008", "--json").stdout)
    assert parse(str(other["provisioning_uri"])).version == "1.1"  # without --slk12: what a 1.1 phone reads

"""`securelink-device` (`device/cli.py`): the device reference on a terminal, with its state file (SLK1 1.1).

Moved out of test_device.py (the reference and the platform round trips stay there).
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from support.device_cli import qr_matrix, read_terminal, run
from support.vectors import BURST, prov

from asterisk_securelink.core.provisioning import Provisioning

ROOT = Path(__file__).resolve().parents[1]


def secret_forms(p: Provisioning) -> list[str]:
    b64 = re.search(r"secret=([^&]+)", p.uri())
    assert b64 is not None
    return [b64.group(1), p.secret.hex(), p.uri()]


def assert_no_secret(proc: subprocess.CompletedProcess[str], p: Provisioning) -> None:
    for form in secret_forms(p):
        assert form not in proc.stdout and form not in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def uri_file(tmp_path: Path) -> Path:
    path = tmp_path / "device.uri"
    path.write_text(prov(inbound="+1NXXNXXXXXX").uri() + "\n")
    path.chmod(0o600)
    return path


def write_uri(tmp_path: Path, p: Provisioning, name: str = "d.uri") -> Path:
    path = tmp_path / name
    path.write_text(p.uri())
    path.chmod(0o600)
    return path


def test_cli_key_prints_the_spec_vector(uri_file: Path) -> None:
    p = run("key", str(uri_file), "--at", str(59682345 * 30 + 10))
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout == "+13582874290  epoch 59682345, 20.0 s left, call 1 of 2 in this period\n"
    assert_no_secret(p, prov(inbound="+1NXXNXXXXXX"))


def test_cli_key_json_and_simulated_watch(uri_file: Path) -> None:
    p = run("key", str(uri_file), "--at", str(59682345 * 30 + 10), "--json", "--watch", "--count", "3")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["epoch"] for r in rows] == [59682345, 59682346, 59682347]
    assert rows[0]["key"] == "+13582874290" and rows[0]["digits"] == "13582874290"
    assert [r["seconds_left"] for r in rows] == [20.0, 30.0, 30.0]
    assert rows[0]["valid_until"] == rows[1]["valid_from"] == 59682346 * 30
    assert rows[0]["valid_until_ms"] == rows[1]["valid_from_ms"] == rows[1]["at_ms"] == 59682346 * 30_000
    assert (rows[0]["burst"], rows[0]["burst_size"], rows[0]["mode"], rows[0]["present"]) == (
        1,
        2,
        "ani",
        rows[0]["key"],
    )
    assert {"device", "key_id", "direction", "format"} <= rows[0].keys() and "secret" not in rows[0]
    assert_no_secret(p, prov(inbound="+1NXXNXXXXXX"))


def test_cli_at_takes_a_fraction_exactly(uri_file: Path) -> None:
    last_ms = json.loads(run("key", str(uri_file), "--at", "1790000039.999", "--json").stdout)
    assert (last_ms["epoch"], last_ms["at_ms"], last_ms["seconds_left"]) == (59666667, 1790000039999, 0.001)
    assert json.loads(run("key", str(uri_file), "--at", "1790000000.5", "--json").stdout)["epoch"] == 59666666


def test_cli_key_watch_on_the_real_clock(tmp_path: Path) -> None:
    path = write_uri(tmp_path, prov(period=5))
    started = time.time()
    p = run("key", str(path), "--watch", "--count", "2", "--json")
    assert p.returncode == 0, p.stderr
    a, b = (json.loads(line) for line in p.stdout.splitlines())
    assert b["epoch"] == a["epoch"] + 1 and time.time() - started < 20


def test_cli_reads_stdin_and_warns_about_an_argument(uri_file: Path) -> None:
    uri = uri_file.read_text()
    from_stdin = run("key", "-", "--at", "100", stdin=uri)
    assert from_stdin.returncode == 0 and from_stdin.stderr == ""
    from_arg = run("key", uri.strip(), "--at", "100")
    assert from_arg.returncode == 0 and from_arg.stdout == from_stdin.stdout
    assert "shell history" in from_arg.stderr
    assert_no_secret(from_arg, prov(inbound="+1NXXNXXXXXX"))


def test_cli_warns_about_a_readable_file(uri_file: Path) -> None:
    uri_file.chmod(0o644)
    p = run("key", str(uri_file), "--at", "100")
    assert p.returncode == 0 and "chmod 600" in p.stderr


def test_cli_reads_device_add_json(tmp_path: Path) -> None:
    path = tmp_path / "add.json"
    path.write_text(json.dumps({"id": 7, "provisioning_uri": prov().uri()}))
    path.chmod(0o600)
    assert run("key", str(path), "--at", "0").stdout.startswith("6141638475 ")


def test_cli_reads_a_1_0_uri(tmp_path: Path) -> None:
    path = tmp_path / "old.uri"
    path.write_text(
        "securelink://provision?v=1&alg=SLK1&device=7&key_id=vector&secret=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
        "&period=30&t0=0&in=%2B1NXXNXXXXXX&out=XXXXXXXXXX&behind=1&ahead=0"
    )
    path.chmod(0o600)
    row = json.loads(run("key", str(path), "--at", str(59682345 * 30), "--json").stdout)
    assert (row["key"], row["device"], row["burst_size"]) == ("+13582874290", 7, 1)


def test_cli_check_exit_codes(uri_file: Path) -> None:
    p0 = prov(inbound="+1NXXNXXXXXX")
    at = str(59682345 * 30 + 10)
    genuine = run("check", str(uri_file), "688-972-6154", "--at", at)
    assert genuine.returncode == 0 and genuine.stdout.startswith("genuine:") and "current window" in genuine.stdout
    late = run("check", str(uri_file), "6889726154", "--at", str(59682346 * 30 + 1))
    assert late.returncode == 0 and "previous window" in late.stdout
    stale = run("check", str(uri_file), "6889726154", "--at", str(59682347 * 30 + 1), "--json")
    assert stale.returncode == 1
    assert json.loads(stale.stdout)["accepted_epochs"] == [59682346, 59682347, 59682348]
    wrong = run("check", str(uri_file), "6889726155", "--at", at)
    assert wrong.returncode == 1 and wrong.stdout.startswith("not genuine:")
    anonymous = run("check", str(uri_file), "anonymous", "--at", at)
    assert anonymous.returncode == 1 and anonymous.stdout.startswith("not genuine:")
    malformed = run("check", str(uri_file), "not-a-number", "--at", at)
    assert malformed.returncode == 2 and malformed.stdout == ""
    assert len(malformed.stderr.splitlines()) == 1 and "not a phone number" in malformed.stderr
    for proc in (genuine, late, stale, wrong, anonymous, malformed):
        assert_no_secret(proc, p0)


def test_cli_check_compares_with_the_provisioned_trunk_prefixes(tmp_path: Path) -> None:
    path = write_uri(tmp_path, prov(outbound="+1NXXNXXXXXX", trunk=("0", "011")))
    at = str(100 * 30 + 10)
    for shown in ("+16239505962", "6239505962", "1 623 950 5962", "0116239505962"):
        assert run("check", str(path), shown, "--at", at).returncode == 0, shown
    assert run("check", str(path), "0016239505962", "--at", at).returncode == 1  # 00 is not one of them


# -- the state file: the burst and the high-water mark across runs ---------------------------------------------
def test_cli_key_with_state_presents_the_burst(tmp_path: Path) -> None:
    uri = write_uri(tmp_path, prov())
    state = tmp_path / "phone.state"
    at = "3010"  # epoch 100, past the margin
    first = run("key", str(uri), "--state", str(state), "--at", at)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"{BURST[100][0]}  epoch 100, 20.0 s left, call 1 of 2 in this period\n"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    second = run("key", str(uri), "--state", str(state), "--at", at, "--json")
    row = json.loads(second.stdout)
    assert (row["key"], row["epoch"], row["burst"], row["burst_size"]) == (BURST[101][0], 101, 2, 2)
    third = run("key", str(uri), "--state", str(state), "--at", at)
    assert third.returncode == 1 and third.stdout.startswith("no keyed call now:") and "22.0 s" in third.stdout
    waited = json.loads(run("key", str(uri), "--state", str(state), "--at", at, "--json").stdout)
    assert (waited["key"], waited["wait_ms"], waited["last_inbound_epoch"]) == (None, 22_000, 101)
    assert json.loads(state.read_text())["last_inbound_epoch"] == 101  # a refusal records nothing
    after = run("key", str(uri), "--state", str(state), "--at", "3032")
    assert after.returncode == 0 and after.stdout.startswith(f"{BURST[102][0]}  epoch 102")
    assert "call 2 of 2" in after.stdout
    corrected = run("key", str(uri), "--state", str(state), "--at", "2010")  # the clock went back: L is reset
    assert corrected.returncode == 0 and "epoch 67," in corrected.stdout


def test_cli_check_with_state_keeps_the_high_water_mark(tmp_path: Path) -> None:
    uri = write_uri(tmp_path, prov())
    state = tmp_path / "phone.state"
    at = "3010"

    def check(number: str) -> subprocess.CompletedProcess[str]:
        return run("check", str(uri), number, "--state", str(state), "--at", at)

    assert check(BURST[100][2]).returncode == 0  # the PBX's first call: 100
    assert check(BURST[101][2]).returncode == 0  # its second within the period: 101
    replay = check(BURST[100][2])  # 100 after 101: spent
    assert replay.returncode == 1 and "already spent" in replay.stdout
    row = json.loads(run("check", str(uri), BURST[101][2], "--state", str(state), "--at", at, "--json").stdout)
    assert (row["status"], row["outbound_high_water"], row["accepted_epochs"]) == ("replayed", 101, [])
    assert json.loads(state.read_text())["outbound_high_water"] == 101


def test_cli_state_and_key_share_one_file(tmp_path: Path) -> None:
    uri = write_uri(tmp_path, prov())
    state = tmp_path / "phone.state"
    assert run("key", str(uri), "--state", str(state), "--at", "3010").returncode == 0
    assert run("check", str(uri), BURST[100][2], "--state", str(state), "--at", "3010").returncode == 0
    kept = json.loads(state.read_text())
    assert (kept["key_id"], kept["last_inbound_epoch"], kept["outbound_high_water"]) == ("vector", 100, 100)


def test_cli_state_of_another_key_id_starts_afresh(tmp_path: Path) -> None:
    state = tmp_path / "phone.state"
    assert run("key", str(write_uri(tmp_path, prov())), "--state", str(state), "--at", "3010").returncode == 0
    rotated = run("key", str(write_uri(tmp_path, prov(key_id="vector-2"), "r.uri")), "--state", str(state),
                  "--at", "3010")  # fmt: skip
    assert rotated.returncode == 0 and "call 1 of 2" in rotated.stdout and "another key_id" in rotated.stderr


@pytest.mark.parametrize("content", ["not json", "{}", '{"format": "slk1-device-state/1"}', "x" * 5000])
def test_cli_a_bad_state_file_is_an_error_not_a_reset(tmp_path: Path, content: str) -> None:
    state = tmp_path / "phone.state"
    state.write_text(content)
    state.chmod(0o600)
    p = run("key", str(write_uri(tmp_path, prov())), "--state", str(state), "--at", "3010")
    assert p.returncode == 2 and "--state" in p.stderr and len(p.stderr.splitlines()) == 1
    assert state.read_text() == content


def test_cli_state_warns_when_others_can_write_it(tmp_path: Path) -> None:
    uri = write_uri(tmp_path, prov())
    state = tmp_path / "phone.state"
    assert run("key", str(uri), "--state", str(state), "--at", "3010").returncode == 0
    state.chmod(0o666)
    p = run("key", str(uri), "--state", str(state), "--at", "3010")
    assert p.returncode == 0 and "chmod 600" in p.stderr
    assert stat.S_IMODE(state.stat().st_mode) == 0o600  # rewritten private


@pytest.mark.parametrize(
    "args",
    [
        ("key", "/nonexistent/device.uri"),
        ("key", "securelink://provision?v=1&device=1&secret=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ("key", "-"),  # empty stdin
        ("key", "{uri}", "--at", "nan"),
        ("key", "{uri}", "--at", "soon"),
        ("key", "{uri}", "--at", "1e9"),
        ("key", "{uri}", "--count", "0"),
        ("key", "{uri}", "--state", "{dir}/s", "--watch"),
        ("key", "{uri}", "--state", "{dir}/s", "--count", "2"),
        ("key", "{uri}", "--state", "{dir}", "--at", "3010"),  # a directory
        ("key", "{uri}", "--state", "/nonexistent/dir/s", "--at", "3010"),
        ("check", "{uri}", "\x1b[31m555"),
        ("check", "{uri}"),
        ("qr", "{uri}", "--png", "/nonexistent/dir/qr.png"),
        ("frobnicate",),
        (),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(uri_file: Path, args: tuple[str, ...]) -> None:
    p = run(*(a.replace("{uri}", str(uri_file)).replace("{dir}", str(uri_file.parent)) for a in args), stdin="")
    assert p.returncode == 2, p.stdout + p.stderr
    errors = [line for line in p.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in p.stderr
    assert "AAAAAAAAAAAAAAAA" not in p.stderr  # a bad URI is never echoed


def test_cli_a_time_before_t0(tmp_path: Path) -> None:
    path = write_uri(tmp_path, prov(t0=2_000_000_000), "t0.uri")
    p = run("key", str(path), "--at", "1000")
    assert p.returncode == 2 and "before the epoch origin" in p.stderr


# QR: the matrix segno would draw for the URI (support/device_cli.py), read back from what the command printed / wrote
def read_png(data: bytes, scale: int = 8, border: int = 4) -> list[list[int]]:
    """A 1-bit greyscale PNG (what segno writes) back into modules: 1 = dark."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, colour, interlace) == (1, 0, 0)
    raw, stride = zlib.decompress(idat), (width + 7) // 8
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):  # PNG filters, 1 byte per "pixel" for bit depth 1
            a, b, c = (line[i - 1] if i else 0), prev[i], (prev[i - 1] if i else 0)
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][ftype]
            line[i] = (line[i] + pred) & 0xFF
        rows.append(line)
        prev = line

    def dark(x: int, y: int) -> int:
        return 0 if rows[y][x // 8] >> (7 - x % 8) & 1 else 1

    size = width // scale - 2 * border
    return [[dark((c + border) * scale + scale // 2, (r + border) * scale + scale // 2) for c in range(size)]
            for r in range(size)]  # fmt: skip


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def test_cli_qr_on_the_terminal_encodes_the_uri(uri_file: Path) -> None:
    p = run("qr", str(uri_file))
    assert p.returncode == 0 and "holds the device secret" in p.stderr
    uri = uri_file.read_text().strip()
    assert read_terminal(p.stdout) == qr_matrix(uri)


def test_cli_qr_png_is_private_and_encodes_the_uri(uri_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "enroll.png"
    out.write_bytes(b"old")
    out.chmod(0o644)  # an existing readable file is replaced by a private one
    p = run("qr", str(uri_file), "--png", str(out))
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert read_png(out.read_bytes()) == qr_matrix(uri_file.read_text().strip())
    assert_no_secret(p, prov(inbound="+1NXXNXXXXXX"))
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".securelink-qr-")] == []


# black box: `securelink device add` -> `securelink-device key` -> `securelink verify`, and the reverse direction
def securelink(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURELINK_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run(
        [sys.executable, "-m", "asterisk_securelink.cli", *args],
        cwd=home, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return p


def test_round_trip_with_the_platform_command(tmp_path: Path) -> None:
    securelink(tmp_path, "init")
    added = json.loads(securelink(tmp_path, "device", "add", "Alice", "--number", "+1 555 010 0001", "--json").stdout)
    uri_path = tmp_path / "alice.uri"
    uri_path.write_text(str(added["provisioning_uri"]))
    uri_path.chmod(0o600)
    securelink(tmp_path, "device", "register", str(added["id"]))
    at = f"{time.time():.3f}"
    state = tmp_path / "alice.state"

    key = json.loads(run("key", str(uri_path), "--at", at, "--json", "--state", str(state)).stdout)
    verdict = json.loads(securelink(tmp_path, "verify", key["key"], "--at", at, "--json").stdout)
    assert (verdict["verdict"], verdict["device"], verdict["epoch"]) == ("admitted", added["id"], key["epoch"])

    pbx_key = securelink(tmp_path, "key", "current", str(added["id"]), "--direction", "outbound", "--at", at)
    checked = run("check", str(uri_path), pbx_key.stdout.strip(), "--at", at, "--state", str(state))
    assert checked.returncode == 0 and "current window" in checked.stdout

    securelink(tmp_path, "device", "rotate", str(added["id"]))  # the old enrollment stops working
    stale = json.loads(run("key", str(uri_path), "--at", at, "--json").stdout)
    after = json.loads(securelink(tmp_path, "verify", stale["key"], "--at", at, "--json").stdout)
    assert after["verdict"] == "mismatch"

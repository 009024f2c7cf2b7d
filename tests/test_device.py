"""The device side (`device.py`, `securelink-device`): it computes what the platform accepts, checks what it presents.

The platform side in these tests is the platform's own code: `VerificationService` on a real SQLite store for inbound
keys, `Store.next_outbound_epoch` + the SLK1 outbound derivation (`outbound_keyer` below, what the service's
`outbound_key` computes) for the outbound keys the PBX presents, and the `securelink` command for the black-box round
trip.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import stat
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import segno
from hypothesis import given, settings
from hypothesis import strategies as st

from asterisk_securelink import config
from asterisk_securelink.config import Config
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.provisioning import Provisioning, ProvisioningError
from asterisk_securelink.core.slk1 import Direction, SLK1Error, derive_key, device_secret, epoch_at
from asterisk_securelink.core.verdicts import Verdict
from asterisk_securelink.device import reference as device
from asterisk_securelink.device.reference import CheckResult, CheckStatus, check, inbound_key, outbound_epochs
from asterisk_securelink.inbound.service import VerificationService, VerifyRequest
from asterisk_securelink.store.migrations import upgrade
from asterisk_securelink.store.store import DeviceRow, Store

ROOT = Path(__file__).resolve().parents[1]
MASTER = bytes(range(32))
VECTOR_SECRET = bytes(range(32))
T = 1_790_000_000.0  # epoch 59666666 at period 30, 20 s into the window
FORMATS = ("XXXXXXXXXX", "+1NXXNXXXXXX", "555XXXXXXX", "9ZXXXXXXXX")


def prov(
    secret: bytes = VECTOR_SECRET,
    *,
    period: int = 30,
    t0: int = 0,
    inbound: str = "XXXXXXXXXX",
    outbound: str = "XXXXXXXXXX",
    device_id: int = 7,
    key_id: str = "vector",
) -> Provisioning:
    return Provisioning(device_id, key_id, secret, period, t0, inbound, outbound, 1, 0)


def outbound(p: Provisioning, epoch: int) -> str:
    """The PBX's outbound key of `epoch`, as the platform renders it."""
    return derive_key(p.secret, Direction.OUTBOUND, epoch, NumberFormat(p.outbound_format))


def outbound_keyer(master_key: bytes, fmt: NumberFormat) -> Callable[[str, int], str]:
    """The PBX's outbound keyer, as the service's `outbound_key`: the device secret from the master key, then SLK1."""

    def key(key_id: str, epoch: int) -> str:
        return derive_key(device_secret(master_key, key_id), Direction.OUTBOUND, epoch, fmt)

    return key


# -- spec vectors (SLK1.md, "Test vectors") --------------------------------------------------------------------
INBOUND_VECTORS = [
    (0, "6141638475", "+12677638475", "5551638475", "9941638475"),
    (1, "5193065513", "+13993065513", "5553065513", "9993065513"),
    (59682345, "3264874290", "+13582874290", "5554874290", "9664874290"),
    (1099511627776, "3805726724", "+15757726724", "5555726724", "9705726724"),
]
OUTBOUND_VECTORS = [
    (0, "6161835209", "+13203835209", "5551835209", "9761835209"),
    (1, "5575039342", "+19469039342", "5555039342", "9675039342"),
    (59682345, "6889726154", "+13113726154", "5559726154", "9289726154"),
    (1099511627776, "9940020971", "+12426020971", "5550020971", "9240020971"),
]


@pytest.mark.parametrize(("epoch", "keys"), [(v[0], v[1:]) for v in INBOUND_VECTORS])
def test_inbound_key_matches_the_spec_vectors(epoch: int, keys: tuple[str, ...]) -> None:
    for fmt, expected in zip(FORMATS, keys, strict=True):
        for at in (epoch * 30, epoch * 30 + 29.5):  # first instant and late in the window
            k = inbound_key(prov(inbound=fmt), at)
            assert (k.key, k.epoch) == (expected, epoch)
            assert k.digits == expected.lstrip("+")


@pytest.mark.parametrize(("epoch", "keys"), [(v[0], v[1:]) for v in OUTBOUND_VECTORS])
def test_check_accepts_the_spec_outbound_vectors(epoch: int, keys: tuple[str, ...]) -> None:
    for fmt, expected in zip(FORMATS, keys, strict=True):
        assert check(prov(outbound=fmt), expected, epoch * 30 + 1) == CheckResult(CheckStatus.GENUINE, epoch, 0)


@pytest.mark.parametrize(
    ("at", "period", "epoch"),
    [(1790000000.5, 30, 59666666), (1790000000.5, 5, 358000000), (1790000029.999, 30, 59666667),
     (1790000030, 30, 59666667), (59.9, 60, 0)],
)  # fmt: skip
def test_epochs_match_the_spec_vectors(at: float, period: int, epoch: int) -> None:
    assert inbound_key(prov(period=period), at).epoch == epoch


def test_window_bounds_and_seconds_left_with_an_epoch_origin() -> None:
    p = prov(period=5, t0=1_000)
    k = inbound_key(p, 1_012.25)  # (1012.25 - 1000) / 5 = 2.45: epoch 2, window [1010, 1015)
    assert (k.epoch, k.valid_from, k.valid_until, k.seconds_left) == (2, 1010.0, 1015.0, 2.75)
    assert inbound_key(p, 1_015).epoch == 3 and inbound_key(p, 1_015).seconds_left == 5.0
    with pytest.raises(SLK1Error):
        inbound_key(p, 999.9)  # before t0: no epoch
    with pytest.raises(SLK1Error):
        inbound_key(p, float("nan"))


def test_load_parses_the_uri_and_refuses_junk() -> None:
    p = prov(inbound="+1NXXNXXXXXX")
    assert device.load(f"  {p.uri()}\n") == p
    with pytest.raises(ProvisioningError):
        device.load("securelink://provision?v=1")


# -- outbound check --------------------------------------------------------------------------------------------
def test_check_accepts_previous_current_and_next_windows_only() -> None:
    p = prov()
    e = 59666666
    assert outbound_epochs(p, T) == [e, e + 1, e - 1]
    for d, window in ((-1, "previous"), (0, "current"), (1, "next")):
        r = check(p, outbound(p, e + d), T)
        assert (r.status, r.epoch, r.offset, r.window, r.genuine) == (CheckStatus.GENUINE, e + d, d, window, True)
    for d in (-3, -2, 2, 3):
        assert check(p, outbound(p, e + d), T) == CheckResult(CheckStatus.NOT_GENUINE)


def test_check_rejects_other_numbers_and_the_other_direction() -> None:
    p = prov()
    e = 59666666
    inbound_same_epoch = derive_key(p.secret, Direction.INBOUND, e, NumberFormat(p.outbound_format))
    assert check(p, inbound_same_epoch, T).status is CheckStatus.NOT_GENUINE  # a reflected inbound key
    other = prov(secret=bytes(range(1, 33)))
    assert check(p, outbound(other, e), T).status is CheckStatus.NOT_GENUINE  # another device's key
    assert check(p, "5550100", T).status is CheckStatus.NOT_GENUINE
    genuine = outbound(p, e)
    wrong_digit = genuine[:-1] + str((int(genuine[-1]) + 1) % 10)
    assert check(p, wrong_digit, T).status is CheckStatus.NOT_GENUINE
    assert check(p, genuine + "0", T).status is CheckStatus.NOT_GENUINE


def test_check_normalizes_like_the_pbx() -> None:
    p = prov(outbound="+1NXXNXXXXXX")
    key = outbound(p, 59666666)  # '+1NXXNXXXXXX': 12 characters with the '+'
    digits = key[1:]
    spaced = f"+{digits[0]} ({digits[1:4]}) {digits[4:7]}-{digits[7:]}"
    for shown in (key, digits, spaced, f"  {key} ", digits.replace("", ".").strip(".")):
        assert check(p, shown, T).genuine, shown
    assert not check(p, digits[1:], T).genuine  # national form without the country code: not what was presented
    assert not check(p, "++" + digits, T).genuine


def test_each_epoch_is_accepted_at_most_once() -> None:
    p = prov()
    e = 59666666
    key = outbound(p, e)
    first = check(p, key, T)
    assert first.genuine and first.epoch == e
    assert check(p, key, T, accepted={e}) == CheckResult(CheckStatus.REPLAYED, e, 0)
    assert check(p, outbound(p, e + 1), T, accepted={e}).genuine  # the next key is still fresh


@pytest.mark.parametrize(
    "number",
    [
        "abc",
        "12",
        "1" * 21,
        "5550\x00100",
        "+1 555 0100; DROP TABLE devices",
        "\u0665\u0665\u0665\u0660\u0661\u0660\u0660",
        "1" * 100,
        "sip:5550100@x",
    ],
)
def test_malformed_numbers_are_a_result_not_an_exception(number: str) -> None:
    assert check(prov(), number, T) == CheckResult(CheckStatus.MALFORMED)


@pytest.mark.parametrize("number", [None, "", "anonymous", "Restricted", " withheld "])
def test_anonymous_numbers(number: str | None) -> None:
    r = check(prov(), number, T)
    assert r == CheckResult(CheckStatus.ANONYMOUS) and not r.genuine and r.window is None


def test_non_string_input_is_malformed() -> None:
    for junk in (5550100, b"5550100", 3.5, ["5550100"]):
        assert check(prov(), junk, T).status is CheckStatus.MALFORMED  # type: ignore[arg-type]


def test_every_window_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # device.py calls hmac.compare_digest through the module
    p = prov()
    check(p, outbound(p, 59666666), T)  # matches the first window tried...
    assert len(calls) == 3  # ...and the other two are compared all the same
    calls.clear()
    check(p, "5550100", T)
    assert len(calls) == 3


def test_epoch_zero_has_no_previous_window() -> None:
    p = prov()
    assert outbound_epochs(p, 1.0) == [0, 1]
    assert check(p, outbound(p, 0), 1.0).genuine


@settings(max_examples=200, deadline=None)
@given(number=st.one_of(st.none(), st.text(max_size=80)))
def test_check_never_raises_on_any_text(number: str | None) -> None:
    r = check(prov(), number, T)
    assert r.status in set(CheckStatus) and r.genuine is (r.status is CheckStatus.GENUINE)


@settings(max_examples=200, deadline=None)
@given(
    secret=st.binary(min_size=16, max_size=64),
    period=st.integers(5, 60),
    t0=st.integers(0, 10**9),
    since=st.floats(0, 10**10, allow_nan=False),
    offset=st.integers(-3, 3),
    fmt=st.sampled_from(FORMATS),
)
def test_property_windows(secret: bytes, period: int, t0: int, since: float, offset: int, fmt: str) -> None:
    p = prov(secret, period=period, t0=t0, inbound=fmt, outbound=fmt)
    at = t0 + since
    k = inbound_key(p, at)
    assert 0 < k.seconds_left <= period and k.valid_from <= at < k.valid_until
    assert k.key == derive_key(secret, Direction.INBOUND, k.epoch, NumberFormat(fmt))
    e = k.epoch + offset
    if e < 0:
        return
    r = check(p, outbound(p, e), at)
    if offset in (-1, 0, 1):
        assert r == CheckResult(CheckStatus.GENUINE, e, offset)
    else:
        assert r.status is CheckStatus.NOT_GENUINE  # (a chance collision, ~3/S, is below what 200 examples find)


# -- against the platform's own verifier -----------------------------------------------------------------------
class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'device.sqlite3'}"
    await upgrade(url)
    s = Store.from_url(url)
    try:
        yield s
    finally:
        await s.close()


def cfg(tmp_path: Path, **keys: object) -> Config:
    return config.build({"keys": dict(keys)}, {}, tmp_path)


def enrolled(c: Config, d: DeviceRow) -> Provisioning:
    """What `securelink device add` gives the device: the derived secret and the platform's key settings."""
    k = c.keys
    secret = device_secret(MASTER, d.key_id)
    p = Provisioning(d.id, d.key_id, secret, k.period, k.t0, k.inbound_format, k.outbound_format, k.look_behind, 0)
    return device.load(p.uri())  # through the URI, as the phone gets it


async def registered(store: Store, name: str, mobile: str, key_id: str) -> DeviceRow:
    d = await store.add_device(name, mobile, None, key_id, "test")
    return await store.update_device(d.id, "device.register", "test", status="registered")


@pytest.mark.parametrize(
    "keys",
    [{}, {"period": 5, "t0": 1_700_000_000, "inbound_format": "+1NXXNXXXXXX"}, {"inbound_format": "555XXXXXXX"}],
)
async def test_the_verifier_admits_the_device_key(sqlite_store: Store, tmp_path: Path, keys: dict[str, object]) -> None:
    c = cfg(tmp_path, **keys)
    a = await registered(sqlite_store, "A", "15550001", "kid-a")
    b = await registered(sqlite_store, "B", "15550002", "kid-b")
    clock = Clock(T)
    svc = VerificationService(c, sqlite_store, MASTER, clock=clock, device_sync_interval=0)
    await svc.start()
    period = c.keys.period
    start = c.keys.t0 + epoch_at(T, period, c.keys.t0) * period  # of the window T is in
    for i, at in enumerate((T, start + 2 * period - 0.001, start + 2 * period, start + 9 * period)):  # ends, starts
        clock.t = at
        for d in (a, b):
            k = inbound_key(enrolled(c, d), at)
            out = await svc.verify(VerifyRequest(presented=k.key, call_id=f"{d.id}-{i}"))
            assert (out.verdict, out.device_id, out.epoch) == (Verdict.ADMITTED, d.id, k.epoch)
    await svc.audit.drain()


async def test_the_verifier_windows_seen_from_the_device(sqlite_store: Store, tmp_path: Path) -> None:
    c = cfg(tmp_path)
    d = await registered(sqlite_store, "A", "15550001", "kid-a")
    svc = VerificationService(c, sqlite_store, MASTER, clock=Clock(T), device_sync_interval=0)
    await svc.start()
    p = enrolled(c, d)
    now = inbound_key(p, T)

    async def verdict(key: str, call: str) -> Verdict:
        return (await svc.verify(VerifyRequest(presented=key, call_id=call))).verdict

    assert await verdict(inbound_key(p, T + 30).key, "ahead") is Verdict.MISMATCH  # look_ahead 0: not yet
    assert await verdict(inbound_key(p, T - 60).key, "old") is Verdict.MISMATCH  # two windows old
    assert await verdict(inbound_key(p, T - 30).key, "prev") is Verdict.ADMITTED  # previous window, a slow call
    assert await verdict(now.key, "c1") is Verdict.ADMITTED
    assert await verdict(now.key, "c2") is Verdict.REPLAYED  # one call per key: the device waits seconds_left
    await svc.audit.drain()


async def test_the_pbx_outbound_keys_pass_the_device_check(sqlite_store: Store, tmp_path: Path) -> None:
    c = cfg(tmp_path, outbound_format="+1NXXNXXXXXX")
    d = await registered(sqlite_store, "A", "15550001", "kid-a")
    p = enrolled(c, d)
    keyer = outbound_keyer(MASTER, c.outbound_fmt)
    current = 59666666
    accepted: set[int] = set()

    async def ring(at_device: float) -> tuple[CheckResult, int | None]:
        """The PBX claims an epoch and presents its key; the phone checks it with its own clock."""
        epoch = await sqlite_store.next_outbound_epoch(d.id, current, None)
        if epoch is None:
            return CheckResult(CheckStatus.NOT_GENUINE), None
        r = check(p, keyer(d.key_id, epoch), at_device, accepted)
        if r.genuine and r.epoch is not None:
            accepted.add(r.epoch)
        return r, epoch

    first, e1 = await ring(T)
    assert e1 == current and first == CheckResult(CheckStatus.GENUINE, current, 0)
    second, e2 = await ring(T + 0.5)  # a second call within the period: the PBX presents current + 1
    assert e2 == current + 1 and second == CheckResult(CheckStatus.GENUINE, current + 1, 1)
    assert (await ring(T + 1))[1] is None  # a third: rate_limited, no key presented
    # the same PBX keys, received late (device clock one window on) or replayed
    assert check(p, keyer(d.key_id, current), T + 30).window == "previous"
    assert check(p, keyer(d.key_id, current), T + 30, accepted).status is CheckStatus.REPLAYED
    assert check(p, keyer(d.key_id, current), T + 60).status is CheckStatus.NOT_GENUINE  # stale


# -- the command -----------------------------------------------------------------------------------------------
def run(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURELINK_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "asterisk_securelink.device.cli", *args],
        input=stdin, capture_output=True, text=True, timeout=60, env=env, cwd=cwd,
    )  # fmt: skip


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


def test_cli_key_prints_the_spec_vector(uri_file: Path) -> None:
    p = run("key", str(uri_file), "--at", str(59682345 * 30 + 10))
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout == "+13582874290  epoch 59682345, 20.0 s left\n"
    assert_no_secret(p, prov(inbound="+1NXXNXXXXXX"))


def test_cli_key_json_and_simulated_watch(uri_file: Path) -> None:
    p = run("key", str(uri_file), "--at", str(59682345 * 30 + 10), "--json", "--watch", "--count", "3")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["epoch"] for r in rows] == [59682345, 59682346, 59682347]
    assert rows[0]["key"] == "+13582874290" and rows[0]["digits"] == "13582874290"
    assert [r["seconds_left"] for r in rows] == [20.0, 30.0, 30.0]
    assert rows[0]["valid_until"] == rows[1]["valid_from"]
    assert "secret" not in rows[0]
    assert_no_secret(p, prov(inbound="+1NXXNXXXXXX"))


def test_cli_key_watch_on_the_real_clock(tmp_path: Path) -> None:
    path = tmp_path / "fast.uri"
    path.write_text(prov(period=5).uri())
    path.chmod(0o600)
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


@pytest.mark.parametrize(
    "args",
    [
        ("key", "/nonexistent/device.uri"),
        ("key", "securelink://provision?v=1&device=1&secret=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ("key", "-"),  # empty stdin
        ("key", "{uri}", "--at", "nan"),
        ("key", "{uri}", "--at", "soon"),
        ("key", "{uri}", "--count", "0"),
        ("check", "{uri}", "\x1b[31m555"),
        ("check", "{uri}"),
        ("qr", "{uri}", "--png", "/nonexistent/dir/qr.png"),
        ("frobnicate",),
        (),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(uri_file: Path, args: tuple[str, ...]) -> None:
    p = run(*(a.replace("{uri}", str(uri_file)) for a in args), stdin="")
    assert p.returncode == 2, p.stdout + p.stderr
    errors = [line for line in p.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in p.stderr
    assert "AAAAAAAAAAAAAAAA" not in p.stderr  # a bad URI is never echoed


def test_cli_a_time_before_t0(tmp_path: Path) -> None:
    path = tmp_path / "t0.uri"
    path.write_text(prov(t0=2_000_000_000).uri())
    path.chmod(0o600)
    p = run("key", str(path), "--at", "1000")
    assert p.returncode == 2 and "before the epoch origin" in p.stderr


# QR: the matrix segno would draw for the URI, read back from what the command printed / wrote
def qr_matrix(uri: str) -> list[list[int]]:
    qr = segno.make(uri, error="m", micro=False)
    return [list(row) for row in qr.matrix]


def read_terminal(text: str, border: int = 4) -> list[list[int]]:
    halves = {" ": (1, 1), "\u2580": (0, 1), "\u2584": (1, 0), "\u2588": (0, 0)}  # segno's compact blocks
    rows: list[list[int]] = []
    for line in text.splitlines():
        pairs = [halves[ch] for ch in line]
        rows += [[t for t, _ in pairs], [b for _, b in pairs]]
    size = len(rows[0]) - 2 * border
    return [row[border : border + size] for row in rows[border : border + size]]


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
    at = str(time.time())

    key = json.loads(run("key", str(uri_path), "--at", at, "--json").stdout)
    verdict = json.loads(securelink(tmp_path, "verify", key["key"], "--at", at, "--json").stdout)
    assert (verdict["verdict"], verdict["device"], verdict["epoch"]) == ("admitted", added["id"], key["epoch"])

    pbx_key = securelink(tmp_path, "key", "current", str(added["id"]), "--direction", "outbound", "--at", at)
    checked = run("check", str(uri_path), pbx_key.stdout.strip(), "--at", at)
    assert checked.returncode == 0 and "current window" in checked.stdout

    securelink(tmp_path, "device", "rotate", str(added["id"]))  # the old enrollment stops working
    stale = json.loads(run("key", str(uri_path), "--at", at, "--json").stdout)
    after = json.loads(securelink(tmp_path, "verify", stale["key"], "--at", at, "--json").stdout)
    assert after["verdict"] == "mismatch"

"""The phone's side of the device API (`device/api_client.py`, `securelink-device enroll|status|fork|claim`) against
the real aiohttp server (`deviceapi/server.py`) on a loopback TLS listener with a self-signed certificate and the
in-memory directory of `support/deviceapi_fakes.py`."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from support.api_server import CALL_KEY, CODE, NUMBER, PARAMS_FORMATS, SKEW_MS, Server, cli
from support.device_cli import qr_matrix, read_terminal, run
from support.deviceapi_fakes import PARAMS, MemoryDirectory, self_signed
from support.keys import MASTER

from asterisk_securelink.core.provisioning import Provisioning
from asterisk_securelink.core.slk1 import device_secret, epoch_at_ms, now_ms
from asterisk_securelink.device import api_client, api_errors
from asterisk_securelink.device import enrollment as files
from asterisk_securelink.device.api_client import (
    AlreadyClaimed,
    AuthenticationFailed,
    Credentials,
    DeviceApiClient,
    DeviceRevoked,
    DeviceRotated,
    NotFound,
    RateLimited,
    RequestRejected,
    TlsFailed,
)
from asterisk_securelink.device.reference import StateError
from asterisk_securelink.deviceapi.codes import enrollment_uri, format_code
from asterisk_securelink.deviceapi.limits import RedeemLimiter
from asterisk_securelink.deviceapi.ports import ClaimResult
from asterisk_securelink.deviceapi.server import DeviceApi, DeviceApiServer
from asterisk_securelink.deviceapi.signing import api_key, authorization, body_hash
from asterisk_securelink.deviceapi.tls import server_context


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    cert, key = self_signed(tmp_path)
    directory = MemoryDirectory()
    directory.add("dev-0001", 1, status="provisioned")
    directory.add("dev-revoked", 2, status="revoked")
    directory.add("dev-0003", 3)
    api = DeviceApi(directory, public_host="pending", clock=lambda: now_ms() + SKEW_MS,
                    limiter=RedeemLimiter(per_network=3))  # fmt: skip
    srv = DeviceApiServer(api, "127.0.0.1", 0, server_context(cert, key))
    await srv.start()
    api.public_host = f"127.0.0.1:{srv.bound_port}"  # what the phones are told: the URL they connect to
    try:
        yield Server(directory, f"https://{api.public_host}", cert, api)
    finally:
        await srv.close()


# -- the client --------------------------------------------------------------------------------------------------
async def test_enroll_learns_the_secret_the_parameters_and_the_platform_clock(server: Server) -> None:
    async with server.client(None, offset_ms=0) as client:
        enrolled = await client.enroll(format_code(server.code()).lower())  # dashes and case ignored
        prov = enrolled.provisioning
        assert (prov.key_id, prov.secret) == ("dev-0001", device_secret(MASTER, "dev-0001"))
        assert (prov.period, prov.t0, prov.inbound_format, prov.outbound_format) == (30, 0, *PARAMS_FORMATS)
        assert (tuple(prov.trunk), prov.mode, prov.dial, prov.look_ahead) == (PARAMS.trunk, "ani", "", 1)
        assert abs(enrolled.offset_ms - SKEW_MS) < 2000 and client.offset_ms == enrolled.offset_ms
        assert "secret" not in repr(enrolled) and "hidden" in repr(client.credentials)
        status = await client.device()  # signed by the platform's clock: an hour off locally
    assert (status.key_id, status.status, status.fork, status.params) == ("dev-0001", "provisioned", True, PARAMS)
    assert [e.result for e in server.directory.events] == ["ok"]


async def test_enroll_refusals(server: Server) -> None:
    code = server.code()
    async with server.client(None) as client:
        await client.enroll(code)
        with pytest.raises(NotFound, match="unknown, used or expired activation code"):
            await client.enroll(code)  # single use
        with pytest.raises(ValueError, match="16 characters"):
            await client.enroll("not-a-code")  # refused locally, never sent
        for wrong in ("AAAA-AAAA-AAAA-AAAA", "BBBB-BBBB-BBBB-BBBB"):
            with pytest.raises(NotFound):
                await client.enroll(wrong)
        with pytest.raises(RateLimited, match="try again later"):
            await client.enroll("CCCC-CCCC-CCCC-CCCC")  # after three failures from this network
    assert server.directory.calls.count("redeem_code") == 4


async def test_fork_toggle(server: Server) -> None:
    async with server.client() as client:
        assert await client.set_fork(False) is False
        assert (await client.device()).fork is False
        assert await client.set_fork(True) is True
    assert server.directory.forks == [(1, False, "device"), (1, True, "device")]


async def test_claim_releases_once_and_repeats_with_the_same_idempotency_key(server: Server) -> None:
    server.voucher()
    async with server.client() as client:
        voucher = await client.claim(NUMBER, idempotency_key="retry-me")
        assert (voucher.call_id, voucher.call_key_id, voucher.call_key) == ("call-1", "ck-call-1", CALL_KEY)
        assert "hidden" in repr(voucher) and len(voucher.call_key_b64) == 43
        assert (await client.claim(NUMBER, idempotency_key="retry-me")).call_key == CALL_KEY
        with pytest.raises(AlreadyClaimed, match="cloned"):
            await client.claim(NUMBER)  # a fresh key: a second claim
        with pytest.raises(NotFound, match="no live call"):
            await client.claim("+12677638476")
    async with server.client("dev-0003") as other:
        with pytest.raises(NotFound):
            await other.claim(NUMBER)  # another device's call
    outcomes = [e.result for e in server.directory.events if e.action == "voucher.claim"]
    assert outcomes == ["released", "repeated", "already_claimed", "not_found", "not_found"]


@pytest.mark.parametrize("lost", ["server error", "timeout"])
async def test_a_lost_claim_answer_is_claimed_again_with_the_same_key(server: Server, lost: str) -> None:
    server.voucher()
    real_claim = server.directory.claim
    keys: list[str | None] = []

    async def claim_then_lose(device_id: int, presented: str, now: int, key: str | None) -> ClaimResult:
        result = await real_claim(device_id, presented, now, key)
        keys.append(key)
        if len(keys) == 1:  # released, but the answer never reaches the phone
            if lost == "timeout":
                await asyncio.sleep(1.0)
            else:
                raise RuntimeError("the node died after the commit")
        return result

    server.directory.claim = claim_then_lose  # type: ignore[method-assign]
    async with server.client(timeout=0.5) as client:
        voucher = await client.claim(NUMBER)
    assert voucher.call_key == CALL_KEY
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0]
    assert [e.result for e in server.directory.events if e.action == "voucher.claim"][-1] == "repeated"


async def test_refusals_as_the_client_reports_them(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server.voucher()
    async with server.client(secret=bytes(32)) as wrong:
        with pytest.raises(AuthenticationFailed, match="authentication failed"):
            await wrong.claim(NUMBER)
    async with server.client(offset_ms=0) as unsynced:  # signs by this machine's clock, an hour behind
        with pytest.raises(AuthenticationFailed):
            await unsynced.device()
    async with server.client("dev-revoked") as revoked:
        assert (await revoked.device()).status == "revoked"  # how it learns
        with pytest.raises(DeviceRevoked, match="revoked"):
            await revoked.claim(NUMBER)
        with pytest.raises(DeviceRevoked):
            await revoked.set_fork(False)
    monkeypatch.setattr(api_client.secrets, "token_urlsafe", lambda n: "the-same-nonce-0001")
    async with server.client() as replaying:
        await replaying.device()
        with pytest.raises(AuthenticationFailed):
            await replaying.device()  # a replayed nonce (401 is not retried)
    assert server.directory.vouchers[0].released is False
    assert not [e for e in server.directory.events if e.result == "released"]


async def test_a_401_is_not_retried_and_its_date_tells_whether_the_clock_is_the_cause(server: Server) -> None:
    """Revision 2: after a 401 the phone checks its clock once, then stops and tells its user."""
    async with server.client(offset_ms=0, attempts=3) as unsynced:  # signs by this machine's clock, an hour behind
        with pytest.raises(AuthenticationFailed, match=r"clock is 3[56]\d\d s behind the platform's") as info:
            await unsynced.device()
    assert info.value.clock_skew_ms is not None and abs(info.value.clock_skew_ms - SKEW_MS) < 3000
    async with server.client(offset_ms=2 * SKEW_MS) as ahead:
        with pytest.raises(AuthenticationFailed, match=r"s ahead of the platform's"):
            await ahead.set_fork(False)
    async with server.client(secret=bytes(32)) as wrong:  # the clock is right, the secret is not
        with pytest.raises(AuthenticationFailed, match=r"clock agreeing .* ask for a new activation code") as info:
            await wrong.claim(NUMBER)
    assert info.value.clock_skew_ms is not None and abs(info.value.clock_skew_ms) < 3000
    assert server.directory.calls.count("secret_of") == 3  # one request each: a 401 is never sent again
    assert server.directory.forks == []


async def test_a_rotated_device_is_told_to_ask_for_a_new_code_not_to_retry(server: Server) -> None:
    """Revision 2: before, a rotated key_id got 401 (and the docs' "after any 401, call GET /v1/device" looped)."""
    server.voucher()
    server.directory.rotate("dev-0001", "dev-0101")
    async with server.client(attempts=3) as old:
        for ask in (old.device, lambda: old.set_fork(False), lambda: old.claim(NUMBER)):
            with pytest.raises(DeviceRotated, match="rotated: its secret no longer works; ask for a new activation"):
                await ask()
    assert server.directory.calls.count("secret_of") == 3 and server.directory.forks == []
    assert not server.directory.vouchers[0].released


def test_an_unknown_403_is_not_taken_for_revoked() -> None:
    """Before, any 403 without a known code (a proxy's HTML page) was DeviceRevoked, and the CLI deleted the
    secret."""
    with pytest.raises(RequestRejected, match="HTTP 403") as info:
        api_errors.answer(403, b"<html>Forbidden</html>", "not found")
    assert not isinstance(info.value, DeviceRevoked)
    with pytest.raises(DeviceRevoked):
        api_errors.answer(403, b'{"error":"revoked","message":"this device is revoked"}', "not found")
    with pytest.raises(DeviceRotated):
        api_errors.answer(403, b'{"error":"rotated","message":"x"}', "not found")


@pytest.mark.parametrize(
    ("date", "skew"),
    [("Mon, 21 Sep 2026 14:13:20 GMT", 0), ("Mon, 21 Sep 2026 14:14:21 GMT", 61_000), ("", None), ("yesterday", None),
     ("Mon, 21 Sep 2026 14:13:20", None)],  # no zone: not usable
)  # fmt: skip
def test_the_clock_check_reads_the_date_header(date: str, skew: int | None) -> None:
    assert api_errors.clock_skew_ms(date, 1_790_000_000_000) == skew


def test_retry_after_is_ascii_digits() -> None:
    assert [api_errors.retry_after_s(v) for v in ("30", "", "3.5", "\u00b2", "\u0663", "-1")] == [30] + [None] * 5


async def test_tls_is_verified(server: Server, tmp_path: Path) -> None:
    async with server.client(ca_file=None) as untrusting:  # the system's CAs do not know a self-signed certificate
        with pytest.raises(TlsFailed, match="TLS"):
            await untrusting.device()
    assert "by_key_id" not in server.directory.calls  # not retried, nothing reached the API
    with pytest.raises(ValueError, match="loopback"):
        DeviceApiClient("http://pbx.example.com:8080")
    for bad in ("ftp://127.0.0.1", "https://pbx.example.com/v1", "https://user@pbx.example.com", "pbx.example.com"):
        with pytest.raises(ValueError):
            DeviceApiClient(bad)


async def test_no_answer_is_unreachable(tmp_path: Path) -> None:
    client = DeviceApiClient("https://127.0.0.1:9", Credentials("dev-0001", bytes(32)), attempts=2)
    async with client:
        with pytest.raises(api_client.Unreachable, match=r"no answer from 127\.0\.0\.1:9"):
            await client.device()


async def test_cli_enroll_status_fork_claim_and_key(server: Server, tmp_path: Path) -> None:
    secret_b64 = base64.urlsafe_b64encode(device_secret(MASTER, "dev-0001")).rstrip(b"=").decode()
    uri = tmp_path / "enroll.uri"
    uri.write_text(enrollment_uri(server.url, server.code()))
    uri.chmod(0o600)
    code, out, err = await cli("enroll", str(uri), "--ca", str(server.ca), "--json", home=tmp_path)
    assert code == 0, err
    state = tmp_path / "securelink-device" / "state.json"  # the default state file
    assert stat.S_IMODE(state.stat().st_mode) == 0o600 and stat.S_IMODE(state.parent.stat().st_mode) == 0o700
    shown = json.loads(out)
    assert (shown["key_id"], shown["status"], shown["fork"]) == ("dev-0001", "provisioned", True)
    assert shown["trunk"] == "0,00"
    assert abs(shown["clock_offset_ms"] - SKEW_MS) < 5000 and secret_b64 not in out + err
    kept = json.loads(state.read_text())
    assert kept["format"] == "slk1-device-state/2" and kept["enrollment"]["secret"] == secret_b64
    assert kept["enrollment"]["server"] == server.url and kept["enrollment"]["ca_file"] == str(server.ca)
    names = {"in", "out", "look_behind", "look_ahead", "trunk", "mode", "dial", "server_time_ms", "clock_offset_ms"}
    assert names <= set(kept["enrollment"])

    code, out, _ = await cli("status", home=tmp_path)
    assert code == 0 and "status: key_id dev-0001" in out and "provisioned, fork on" in out
    code, out, _ = await cli("fork", "off", home=tmp_path)
    assert (code, out) == (0, "fork off: the desk rings alone\n")
    assert json.loads(state.read_text())["enrollment"]["fork"] is False

    server.voucher()
    code, out, _ = await cli("claim", NUMBER, "--json", home=tmp_path)
    assert code == 0 and json.loads(out) == {"call_id": "call-1", "call_key_id": "ck-call-1",
                                             "call_key": api_client.CallKey("", "", CALL_KEY).call_key_b64}  # fmt: skip
    code, _, err = await cli("claim", NUMBER, home=tmp_path)
    assert code == 1 and "already released" in err
    code, _, err = await cli("claim", "+15550000000", home=tmp_path)
    assert code == 1 and "no live call" in err

    # the key is presented by the platform's clock (an hour ahead), and recorded in the same file
    code, out, err = await cli("key", "--json", home=tmp_path)
    assert code == 0, err
    platform_epoch = epoch_at_ms(now_ms() + SKEW_MS, 30, 0)
    assert json.loads(out)["epoch"] in (platform_epoch - 1, platform_epoch)
    kept = json.loads(state.read_text())
    assert kept["last_inbound_epoch"] == json.loads(out)["epoch"] and kept["enrollment"]["secret"] == secret_b64


async def test_cli_enroll_with_a_code_and_refusals(server: Server, tmp_path: Path) -> None:
    state_file = tmp_path / "phone.state"
    state = str(state_file)
    code, _, err = await cli("enroll", CODE, "--state", state, home=tmp_path)
    assert code == 2 and "--server" in err
    code, _, err = await cli("enroll", server.code(), "--server", server.url, "--state", state, home=tmp_path)
    assert code == 3 and "TLS" in err and not state_file.exists()  # no --ca: the certificate is not trusted
    assert server.directory.calls.count("redeem_code") == 0
    code, out, err = await cli("enroll", format_code(CODE), "--server", server.url, "--ca", str(server.ca),
                               "--state", state, home=tmp_path)  # fmt: skip
    assert code == 0 and "enrolled: key_id dev-0001" in out, err
    code, _, err = await cli("enroll", CODE, "--server", server.url, "--ca", str(server.ca), "--state", state,
                             home=tmp_path)  # fmt: skip
    assert code == 1 and "unknown, used or expired" in err
    assert json.loads(state_file.read_text())["enrollment"]["secret"]  # a refused enrollment changes nothing


async def test_cli_a_rotated_device_says_ask_for_a_new_activation_code(server: Server, tmp_path: Path) -> None:
    state = tmp_path / "phone.state"
    uri = enrollment_uri(server.url, server.code())
    code, _, err = await cli("enroll", uri, "--ca", str(server.ca), "--state", str(state), home=tmp_path)
    assert code == 0, err
    kept = state.read_text()
    server.directory.rotate("dev-0001", "dev-0101")
    before = server.directory.calls.count("secret_of")
    for command in (("status",), ("fork", "on"), ("claim", NUMBER)):
        code, out, err = await cli(*command, "--state", str(state), home=tmp_path)
        assert (code, out) == (1, ""), err
        assert "rotated" in err and "ask for a new activation code" in err and err.count("\n") == 1
    assert server.directory.calls.count("secret_of") == before + 3  # one request per command, none retried
    assert state.read_text() == kept  # nothing deleted: a new code's enrollment replaces it


async def test_cli_a_401_says_whether_to_correct_the_clock(server: Server, tmp_path: Path) -> None:
    state = tmp_path / "phone.state"
    code, _, err = await cli("enroll", enrollment_uri(server.url, server.code()), "--ca", str(server.ca), "--state",
                             str(state), home=tmp_path)  # fmt: skip
    assert code == 0, err
    kept = json.loads(state.read_text())
    kept["enrollment"]["clock_offset_ms"] = 0  # as if the offset were lost: signs by this machine's clock
    state.write_text(json.dumps(kept))
    before = server.directory.calls.count("secret_of")
    code, _, err = await cli("status", "--state", str(state), home=tmp_path)
    assert code == 1 and "s behind the platform's" in err and "correct the clock" in err, err
    assert server.directory.calls.count("secret_of") == before + 1


async def test_cli_a_revoked_device_deletes_its_secret(server: Server, tmp_path: Path) -> None:
    state = tmp_path / "phone.state"
    uri = enrollment_uri(server.url, server.code("dev-revoked"))
    code, out, err = await cli("enroll", uri, "--ca", str(server.ca), "--state", str(state), home=tmp_path)
    assert code == 0 and "revoked" in out, err
    code, _, err = await cli("status", "--state", str(state), home=tmp_path)
    assert code == 0 and "secret was deleted" in err
    kept = json.loads(state.read_text())
    assert kept["format"] == "slk1-device-state/1" and "enrollment" not in kept
    code, _, err = await cli("claim", NUMBER, "--state", str(state), home=tmp_path)
    assert code == 2 and "enroll first" in err


async def test_cli_qr_draws_an_enrollment_uri(server: Server, tmp_path: Path) -> None:
    uri = enrollment_uri(server.url, CODE)
    path = tmp_path / "enroll.json"
    path.write_text(json.dumps({"enrollment_uri": uri}))
    path.chmod(0o600)
    code, out, err = await cli("qr", str(path), home=tmp_path)
    assert code == 0 and "one-time activation code" in err
    assert read_terminal(out) == qr_matrix(uri)


# -- the state file of an enrolled device (pure) -----------------------------------------------------------------
def enrolled_file(key_id: str = "dev-0001") -> files.DeviceFile:
    prov = Provisioning.of(PARAMS, key_id=key_id, secret=device_secret(MASTER, key_id))
    e = files.Enrollment("https://pbx.example.com:8443", prov, 1_790_000_000_250, 250, ca_file="/etc/ca.pem")
    return files.enrolled(None, e)


def test_the_enrolled_state_file_round_trips_and_keeps_l_and_h_across_status() -> None:
    file = enrolled_file()
    file = files.DeviceFile(replace(file.state, last_inbound=7, outbound_high_water=6), file.enrollment)
    again = files.from_json(files.to_json(file))
    assert again.state == file.state and again.enrollment is not None and file.enrollment is not None
    assert again.enrollment.provisioning == file.enrollment.provisioning  # the secret included
    assert (again.enrollment.server, again.enrollment.ca_file, again.enrollment.status) == (
        "https://pbx.example.com:8443", "/etc/ca.pem", None)  # fmt: skip
    assert "secret" not in repr(again.enrollment) and again.enrollment.platform_ms(1000) == 1250
    kept, changed = files.with_status(file, status="registered", fork=False, params=replace(PARAMS, mode="dnis",
                                      dial="9"), server_time_ms=5, clock_offset_ms=-40)  # fmt: skip
    assert changed == ["mode", "dial"] and kept.state == file.state  # same timeline: L and H kept
    moved, changed = files.with_status(file, status="registered", fork=True, params=replace(PARAMS, period=60),
                                       server_time_ms=5, clock_offset_ms=0)  # fmt: skip
    assert changed == ["period"] and (moved.state.last_inbound, moved.state.outbound_high_water) == (None, None)
    assert json.loads(files.to_json(files.forget(file))) == json.loads(files.to_json(files.DeviceFile(file.state)))
    assert json.loads(files.to_json(files.forget(file)))["format"] == "slk1-device-state/1"


@pytest.mark.parametrize(
    ("path", "value"),
    [("secret", "not base64!"), ("secret", "AAAA"), ("v", "1"), ("status", "gone"), ("in", "Q"), ("fork", "yes")],
)
def test_a_bad_enrollment_is_refused_without_echoing_the_secret(path: str, value: str) -> None:
    doc = json.loads(files.to_json(enrolled_file()))
    doc["enrollment"][path] = value
    secret_b64 = json.loads(files.to_json(enrolled_file()))["enrollment"]["secret"]
    with pytest.raises(StateError, match=f"enrollment.*{path if path != 'in' else ''}") as caught:
        files.from_json(json.dumps(doc))
    assert secret_b64 not in str(caught.value) and (path != "secret" or value not in str(caught.value))


def test_cli_a_uri_of_another_key_id_never_replaces_an_enrollment(tmp_path: Path) -> None:
    state = tmp_path / "phone.state"
    state.write_text(files.to_json(enrolled_file()))
    state.chmod(0o600)
    uri = tmp_path / "other.uri"
    uri.write_text(Provisioning.of(PARAMS, key_id="dev-other", secret=bytes(32)).uri())
    uri.chmod(0o600)
    p = run("key", str(uri), "--state", str(state), "--at", "3010")
    assert p.returncode == 2 and "holds the enrollment of key_id dev-0001" in p.stderr
    assert json.loads(state.read_text())["enrollment"]["secret"]
    p = run("key", "--state", str(state), "--at", "3010")  # the enrollment's own keys
    assert p.returncode == 0 and "epoch 100," in p.stdout
    state.chmod(0o644)
    p = run("check", "1234567890", "--state", str(state), "--at", "3010")
    assert p.returncode == 1 and "holds the device secret" in p.stderr


def test_the_fork_vector_of_docs_device_integration() -> None:
    """docs/device-integration.md §12.2 adds a PUT vector to the contract's GET and POST ones."""
    body = b'{"enabled":false}'
    header = authorization("dev-0001", api_key(device_secret(MASTER, "dev-0001")), method="PUT",
                           host="pbx.example.com:8443", target="/v1/device/fork", body=body, ts=1790000000,
                           nonce="n0nce-0123456789")  # fmt: skip
    assert body_hash(body).startswith("5acf3ff7") and body_hash(body).endswith("325146")
    assert header.endswith('sig="8prMKWEB5_z7z8o8emV0fboGTxPhYXsi7q9ulF2F0yo"')

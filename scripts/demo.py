#!/usr/bin/env python3
"""`make demo`: securelink on its embedded default (SQLite store, 30 s period), on the local Asterisk testbed.

Enrolls one device, starts `securelink run`, and plays a short scene with SIPp as the phones, printing what happened:
  1. the genuine device calls the PBX presenting its current key as caller ID       -> admitted
  2. a spoofer calls with the employee's real mobile number as caller ID            -> rejected
  3. someone replays the key that was just used                                     -> rejected (replayed)
  4. the PBX calls the mobile and presents a fresh key; the phone checks it         -> genuine
  5. Alice's ordinary cellular phone (its caller ID is her own number, set by the network) calls the access
     number and sends its key by DTMF, then the extension it wants                  -> admitted (method dtmf)
  6. a spoofer calls the access number with Alice's number and guesses a key        -> rejected
  7. Alice's app asks the device API (TLS) for an intent, then her phone dials the
     access number it names                                                          -> admitted before answer
Exit code 0 when every scene behaved as described, 1 otherwise. Everything lives in ./.demo (removed at start).
The SIPp driver and the testbed helpers are the end-to-end tests' own (tests/e2e).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "e2e")]  # harness uses tests/support

from harness import app_registered, wait_until  # noqa: E402
from sipp import UasProcess, dtmf_steps, run_dtmf_call, run_uac  # noqa: E402
from support.deviceapi_fakes import self_signed  # noqa: E402

from asterisk_securelink import masterkey  # noqa: E402
from asterisk_securelink.core.formats import NumberFormat  # noqa: E402
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret, epoch_at_ms, now_ms  # noqa: E402
from testbed import AMI_SECRET, AMI_USER, ARI_PASSWORD, ARI_USER  # noqa: E402

HOME = REPO / ".demo"
APP = "securelink"
MOBILE = "+15551230001"
APP_MOBILE = "+15551230002"  # Alice's second phone, with the SecureLink app (SLK1 1.2, intents)
API = "127.0.0.1:18443"
ACCESS = "+12155550400"
FMT = NumberFormat("XXXXXXXXXX")  # the default inbound_format / outbound_format
CONFIG = f"""# securelink demo: the embedded default (SQLite, 30 s period) wired to the local testbed
[ari]
url = "http://127.0.0.1:8088"
username = "{ARI_USER}"
password = "{ARI_PASSWORD}"
app = "{APP}"
[ami]
username = "{AMI_USER}"
secret = "{AMI_SECRET}"
[outbound]
ring_timeout = 10
[calling]
access_numbers = ["{ACCESS}"]   # the testbed routes a dialled 400 here
"""


DESK = "PJSIP/1001"  # Alice's desk phone in the testbed (pjsip.conf: context from-desk, "Alice" <1001>)
INTENT_DEST = "8000"  # an extension of from-desk that answers (2001 rings a colleague who is not there)


def say(text: str = "") -> None:
    print(text, flush=True)


def command(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE ARGS` in the demo's folder, as its user runs it (no SECURELINK_* from this shell)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURELINK_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=HOME, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    p = command("asterisk_securelink.cli", *args)
    if p.returncode != 0:
        raise SystemExit(f"demo: `securelink {' '.join(args)}` failed: {p.stderr.strip()}")
    return p


def device_cli(*args: str) -> str:
    """`securelink-device ARGS` as the phone's app runs it; its output ("" when it failed: the scene says so)."""
    p = command("asterisk_securelink.device.cli", *args)
    if p.returncode != 0:
        say(f"   (securelink-device {args[0]} failed: {p.stderr.strip()})")
        return ""
    return p.stdout


def last_verdict(action: str = "verify") -> dict[str, Any]:
    rows = json.loads(cli("audit", "list", "--action", action, "--json").stdout)
    return rows[-1] if rows else {}


def code(status: int | None) -> str:
    return {200: "200 OK", 403: "403 Forbidden"}.get(status or 0, str(status))


def main() -> int:
    shutil.rmtree(HOME, ignore_errors=True)
    HOME.mkdir()
    cert, tls_key = self_signed(HOME)  # the device API's certificate (a real PBX has its own)
    api = f'[device_api]\nlisten = "{API}"\npublic_host = "{API}"\ntls_cert = "{cert}"\ntls_key = "{tls_key}"\n'
    (HOME / "securelink.toml").write_text(CONFIG + api)
    say("== securelink demo: caller-ID anti-spoofing on a real Asterisk (the local testbed) ==")
    cli("init")
    say(f"Set up {HOME}: config, master key (0600), SQLite database, schema migrated.")
    alice = ("--number", MOBILE, "--desk-endpoint", DESK, "--json")
    dev = json.loads(cli("device", "add", "Alice's phone", *alice).stdout)
    cli("device", "register", str(dev["id"]))
    say(f'Enrolled device {dev["id"]} "Alice\'s phone" (mobile {MOBILE}); its provisioning URI was issued once')
    say("(it carries the device secret, so the demo does not print it) and the device is registered.")
    master = masterkey.load(HOME / "master.key")
    secret = device_secret(master, str(dev["key_id"]))

    wait_until(lambda: not app_registered(), 15, "a previous securelink app to go away")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURELINK_")}
    env["PYTHONPATH"] = str(REPO)
    log = (HOME / "run.log").open("ab")
    app = subprocess.Popen(
        [sys.executable, "-m", "asterisk_securelink.cli", "run"],
        cwd=HOME, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    ok = True
    try:
        wait_until(app_registered, 20, "`securelink run` to register its Stasis app")
        say("Started `securelink run`: the Stasis app is connected to Asterisk (ARI).\n")

        key = derive_key(secret, Direction.INBOUND, epoch_at_ms(now_ms(), 30), FMT)
        (r,) = run_uac([(key, "100")])
        v = last_verdict()
        good = r.status_code == 200 and v.get("result") == "admitted"
        ok &= good
        say(f"1. Alice's phone calls the PBX with caller ID {key} - its current synchronized key.")
        say(f"   Asterisk answered {code(r.status_code)}; securelink's verdict: {v.get('result')}. "
            + ("The call is trusted." if good else "UNEXPECTED."))  # fmt: skip

        (r,) = run_uac([(MOBILE, "100")])
        v = last_verdict()
        good = r.status_code == 403 and v.get("result") not in (None, "admitted")
        ok &= good
        say(f"2. A spoofer calls with caller ID {MOBILE} - Alice's real number, trivially forged.")
        say(f"   Asterisk answered {code(r.status_code)}; verdict: {v.get('result')}. "
            + ("The forged caller ID got nowhere." if good else "UNEXPECTED."))  # fmt: skip

        (r,) = run_uac([(key, "100")])
        v = last_verdict()
        good = r.status_code == 403 and v.get("result") == "replayed"
        ok &= good
        say(f"3. Someone replays {key}, the key Alice just used.")
        say(f"   Asterisk answered {code(r.status_code)}; verdict: {v.get('result')}. "
            + ("Each key is good for one call." if good else "UNEXPECTED."))  # fmt: skip

        with UasProcess(5070, mode="answer", ring_ms=500) as mobile:
            start = time.time()
            (r,) = run_uac([("15557770000", f"6{dev['id']}")], timeout=30)
            invites = mobile.invites()
        presented = invites[0].from_user if invites else ""
        # the phone's side: accept the PBX's current or next outbound key (SLK1.md, "Outbound presentation")
        epochs = range(epoch_at_ms(int(start * 1000), 30) - 1, epoch_at_ms(now_ms(), 30) + 2)
        genuine = any(derive_key(secret, Direction.OUTBOUND, e, FMT) == presented for e in epochs)
        good = r.status_code == 200 and genuine
        ok &= good
        say(f"4. The PBX calls Alice's mobile ({MOBILE}) through the carrier, presenting caller ID {presented}.")
        say(
            f"   Alice's phone computes the PBX's keys itself: {'GENUINE' if genuine else 'NOT GENUINE'}; "
            f"the caller was connected only when the mobile answered ({code(r.status_code)})."
        )

        # 5. any phone: the key by DTMF after dialling the access number (the app's dial string ACCESS,,KEY,DEST)
        next_key = derive_key(secret, Direction.INBOUND, epoch_at_ms(now_ms(), 30) + 1, FMT)  # the burst's key
        call = run_dtmf_call(MOBILE.lstrip("+"), "400", dtmf_steps(f"{next_key},2001"), hold_ms=8000)
        v = last_verdict()
        good = call.status_code == 200 and v.get("result") == "admitted" and v.get("mode") == "dtmf"
        ok &= good
        say(f"5. Alice's ordinary cellular phone calls the access number {ACCESS}; the mobile network shows her own")
        say(f"   number {MOBILE}. Once answered it hears a beep and sends its next key {next_key} by DTMF, then 2001.")
        say(f"   Verdict: {v.get('result')}, method {v.get('mode')}. "
            + ("She is in, as her desk phone (SECURELINK_DESTINATION=2001)." if good else "UNEXPECTED."))  # fmt: skip

        # 6. the same caller ID without the key: the network's caller ID alone proves nothing
        guess = str((int(next_key) + 1) % 10**10).zfill(10)
        call = run_dtmf_call(MOBILE.lstrip("+"), "400", dtmf_steps(f"{guess},2001"), hold_ms=12000)
        v = last_verdict()
        good = v.get("result") == "mismatch" and v.get("mode") == "dtmf"
        ok &= good
        say(f"6. A spoofer calls the access number showing {MOBILE} too, and guesses a key.")
        say(f"   It hears 'authentication incorrect' and the PBX hangs up; verdict: {v.get('result')}. "
            + ("Caller ID plus a one-time key, not caller ID alone." if good else "UNEXPECTED."))  # fmt: skip

        # 7. the app asks for an intent over the device API, then the phone dials the access number it names
        app_args = ("--number", APP_MOBILE, "--desk-endpoint", DESK, "--activation", "--json")
        added = json.loads(cli("device", "add", "Alice's app", *app_args).stdout)
        state = HOME / "phone-state.json"
        enrolled = device_cli("enroll", added["enrollment_uri"], "--ca", str(cert), "--state", str(state))
        cli("device", "register", str(added["id"]))
        doc = json.loads(device_cli("intent", INTENT_DEST, "--json", "--state", str(state)) or "{}")
        (r,) = run_uac([(APP_MOBILE.lstrip("+"), str(doc.get("dial", ""))[-3:])])  # the testbed routes 4XX
        v = last_verdict()
        good = enrolled and doc.get("method") == "intent" and r.status_code == 200 and v.get("mode") == "intent"
        good = good and v.get("result") == "admitted"
        ok &= good
        say("7. Alice's app (SLK1 1.2) enrolled by activation code over the device API (TLS) and asked for an intent")
        say(
            f"   to call {INTENT_DEST}; the PBX named access number {doc.get('dial')}. Her phone dialled it from "
            f"{APP_MOBILE}:"
        )
        say(f"   Asterisk answered {code(r.status_code)}; verdict: {v.get('result')}, method {v.get('mode')}, decided "
            + ("before the call was answered, no DTMF." if good else "UNEXPECTEDLY."))  # fmt: skip
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        app.wait(15)
        log.close()
    rows = json.loads(cli("audit", "list", "--json").stdout)
    verdicts = [f"{e['action']} {e['result']}" for e in rows if e.get("action") in ("verify", "outbound")]
    say(f"\nAudit trail (append-only, no secrets): {', '.join(verdicts)}")
    say("Try: cd .demo && securelink audit list   |   securelink doctor   |   securelink device list")
    say("Demo " + ("finished: everything behaved as described." if ok else "FAILED: see above and .demo/run.log"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

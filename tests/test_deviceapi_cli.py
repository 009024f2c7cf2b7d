"""`securelink device add|rotate --activation` and `device show`'s fork line, as an administrator runs them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from test_cli import run

from asterisk_securelink import config, masterkey
from asterisk_securelink.core.slk1 import device_secret, now_ms
from asterisk_securelink.deviceapi.codes import code_hash, format_code, parse_enrollment_uri
from asterisk_securelink.provision import device_params
from asterisk_securelink.store.api_store import ApiStore
from asterisk_securelink.store.store import Store

API = '\n[device_api]\nlisten = "127.0.0.1:8443"\npublic_host = "pbx.example.com:8443"\ncode_ttl = 600\n'


def redeem(home: Path, code: str) -> tuple[str, bytes] | None:
    cfg = config.load(home / "securelink.toml", env={})

    async def go() -> tuple[str, bytes] | None:
        store = Store.from_url(cfg.database_url)
        try:
            api = ApiStore(store, masterkey.load(cfg.master_key_path), device_params(cfg), audit=lambda e: None)
            got = await api.redeem_code(code_hash(code), now_ms())
            return None if got is None else (got.key_id, got.secret)
        finally:
            await store.close()

    return asyncio.run(go())


def test_add_and_rotate_with_an_activation_code(tmp_path: Path) -> None:
    run(tmp_path, "init")
    refused = run(tmp_path, "device", "add", "A", "--number", "+15550100001", "--activation", check=False)
    assert refused.returncode == 2 and "[device_api] listen" in refused.stderr
    assert json.loads(run(tmp_path, "device", "list", "--json").stdout) == []  # nothing was added
    with (tmp_path / "securelink.toml").open("a") as f:
        f.write(API)
    out = run(tmp_path, "device", "add", "Alice", "--number", "+15550100001", "--activation", "--json").stdout
    doc = json.loads(out)
    assert "provisioning_uri" not in doc and "secret" not in out
    server, code = parse_enrollment_uri(doc["enrollment_uri"])
    assert server == "https://pbx.example.com:8443" and format_code(code) == doc["activation_code"]
    text = run(tmp_path, "device", "rotate", str(doc["id"]), "--activation").stdout
    assert "activation code" in text and "securelink://enroll?server=https%3A%2F%2Fpbx.example.com%3A8443" in text
    assert "\u2580" in text or "\u2588" in text or "\u2584" in text  # the QR code, drawn with block characters
    new_code = text.split("give it only to the device's user): ", 1)[1].split("\n", 1)[0]
    db = (tmp_path / "securelink.sqlite3").read_bytes()
    assert code.encode() not in db and new_code.replace("-", "").encode() not in db  # only their hashes
    assert redeem(tmp_path, code) is None  # the re-enrollment expired it (and it names the old key_id)
    shown = json.loads(run(tmp_path, "device", "show", str(doc["id"]), "--json").stdout)
    got = redeem(tmp_path, new_code)
    assert got is not None and got[0] == shown["key_id"] != doc["key_id"]
    assert got[1] == device_secret(masterkey.load(tmp_path / "master.key"), shown["key_id"])
    assert redeem(tmp_path, new_code) is None  # single use
    both = run(tmp_path, "device", "rotate", "--all", "--activation", check=False)
    assert both.returncode == 2 and "rotate DEVICE --activation" in both.stderr


def test_device_show_says_who_set_fork_last(tmp_path: Path) -> None:
    run(tmp_path, "init")
    dev = json.loads(run(tmp_path, "device", "add", "B", "--number", "+15550100002", "--json").stdout)
    shown = json.loads(run(tmp_path, "device", "show", str(dev["id"]), "--json").stdout)
    assert shown["fork_set_by"] is None and shown["fork_set_at"] is None
    run(tmp_path, "device", "fork", str(dev["id"]), "off")
    shown = json.loads(run(tmp_path, "device", "show", str(dev["id"]), "--json").stdout)
    assert shown["fork_set_by"] == "cli" and shown["fork"] is False and shown["fork_set_at"]
    assert "fork_set_by: cli" in run(tmp_path, "device", "show", str(dev["id"])).stdout

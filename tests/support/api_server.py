"""A loopback TLS device API server for the phone-side tests (`securelink-device` and `device/api_client.py`): the
real aiohttp server (`deviceapi/server.py`) over the in-memory directory of `support/deviceapi_fakes.py`, and the
`securelink-device` command as a child process."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from asterisk_securelink.core.slk1 import device_secret, now_ms
from asterisk_securelink.device.api_client import Credentials, DeviceApiClient
from asterisk_securelink.deviceapi.codes import code_hash
from asterisk_securelink.deviceapi.server import DeviceApi
from support.deviceapi_fakes import MemoryDirectory, Voucher
from support.keys import MASTER

ROOT = Path(__file__).resolve().parents[2]
CODE = "ABCDEFGHIJKLMNOP"
SKEW_MS = 3_600_000  # the platform's clock is an hour ahead of this machine's: only its time signs and keys right
CALL_KEY = bytes(range(100, 132))
NUMBER = "+12677638475"
PARAMS_FORMATS = ("+1NXXNXXXXXX", "XXXXXXXXXX")


@dataclass
class Server:
    directory: MemoryDirectory
    url: str
    ca: Path
    api: DeviceApi

    def code(self, key_id: str = "dev-0001", code: str = CODE) -> str:
        self.directory.codes[code_hash(code)] = (key_id, now_ms() + SKEW_MS + 900_000, False)
        return code

    def voucher(self, number: str = NUMBER, device_id: int = 1, call: str = "call-1") -> Voucher:
        v = Voucher(device_id, number, call, f"ck-{call}", CALL_KEY)
        self.directory.vouchers.append(v)
        return v

    def client(self, key_id: str | None = "dev-0001", secret: bytes | None = None, **kw: object) -> DeviceApiClient:
        creds = None if key_id is None else Credentials(key_id, secret or device_secret(MASTER, key_id))
        kw.setdefault("ca_file", self.ca)
        kw.setdefault("offset_ms", SKEW_MS)
        return DeviceApiClient(self.url, creds, **kw)  # type: ignore[arg-type]  # test keywords


async def cli(*args: str, home: Path) -> tuple[int, str, str]:
    """`securelink-device` in a child process (the server keeps serving in this event loop meanwhile)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURELINK_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["XDG_CONFIG_HOME"] = str(home)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "asterisk_securelink.device.cli", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env=env)  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert b"Traceback" not in err
    return proc.returncode or 0, out.decode(), err.decode()

"""Playing Asterisk's side of FastAGI on a raw socket: the environment block it sends, and its answers."""

from __future__ import annotations

import asyncio


def agi_env(script: str = "verify", *args: str, **extra: str) -> bytes:
    env = {
        "agi_network": "yes",
        "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1:4573/{script}",
        "agi_channel": "PJSIP/carrier-0000002a",
        "agi_language": "en",
        "agi_type": "PJSIP",
        "agi_uniqueid": "1700000000.42",
        "agi_version": "22.0.0",
        "agi_callerid": "4915112345678",
        "agi_calleridname": "unknown",
        "agi_dnid": "7000",
        "agi_rdnis": "unknown",
        "agi_context": "securelink-inbound-agi",
        "agi_extension": "7000",
        "agi_priority": "3",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",
        "agi_threadid": "140000000000",
    }
    env.update(extra)
    for i, a in enumerate(args, 1):
        env[f"agi_arg_{i}"] = a
    return "".join(f"{k}: {v}\n" for k, v in env.items()).encode() + b"\n"


async def answer_commands(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: bytes = b"200 result=1\n"
) -> list[str]:
    """Play Asterisk: answer every command until the server closes; return the commands."""
    commands: list[str] = []
    async with asyncio.timeout(5):
        while line := await reader.readline():
            commands.append(line.decode().rstrip("\n"))
            writer.write(reply)
            await writer.drain()
    writer.close()
    return commands

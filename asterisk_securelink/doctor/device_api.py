"""`securelink doctor`'s checks of the device API: its certificate (valid, not expiring within 14 days:
`tls.certificate_problem`) and that `securelink run` is serving it (an unsigned `GET /v1/device` gets the API's
401 `unauthorized`)."""

from __future__ import annotations

import json
import ssl
from datetime import UTC, datetime
from typing import Final

import aiohttp

from asterisk_securelink.config import Config
from asterisk_securelink.deviceapi.settings import listen_address
from asterisk_securelink.deviceapi.tls import EXPIRY_WARNING, certificate_problem
from asterisk_securelink.doctor.check import Check

PROBE_TIMEOUT: Final = 5.0
_LOCAL: Final = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 - wildcards, probed locally


async def device_api_checks(cfg: Config) -> list[Check]:
    api = cfg.device_api
    if not api.enabled:
        return []  # off: nothing to check
    checks: list[Check] = []
    if api.tls_configured:
        checks.append(certificate_check(cfg, datetime.now(UTC)))
    ok, detail = await probe(cfg)
    checks.append(
        Check(
            "device API",
            ok,
            detail,
            "start `securelink run` (it serves the device API) and check device_api.listen; phones enroll and claim "
            "through it",
        )
    )
    return checks


def certificate_check(cfg: Config, now: datetime) -> Check:
    path = cfg.path(cfg.device_api.tls_cert)
    try:
        problem = certificate_problem(path.read_bytes(), now)
    except OSError as exc:
        problem = f"cannot read it ({exc.strerror})"
    expiring = problem is not None and problem.startswith("expires on")
    return Check(
        "device API certificate",
        problem is None,
        f"{path}: {problem}" if problem else f"{path}: valid for more than {EXPIRY_WARNING.days} days",
        "renew the certificate (device_api.tls_cert, tls_key) and restart `securelink run`",
        warn=expiring,
    )


async def probe(cfg: Config) -> tuple[bool, str]:
    """(serving, detail): an unsigned `GET /v1/device` must get the API's own 401 answer. The certificate is not
    verified here (`certificate_check` reads it); the phones verify it."""
    host, port = listen_address(cfg.device_api)
    host = _LOCAL.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if cfg.device_api.tls_configured else "http"
    url = f"{scheme}://{shown}:{port}/v1/device"
    context: ssl.SSLContext | bool = False if scheme == "https" else True
    try:
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, ssl=context) as resp:
            body = await resp.read()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return False, f"nothing answers at {scheme}://{shown}:{port} ({type(exc).__name__})"
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    if resp.status == 401 and error == "unauthorized":
        return True, f"listening at {scheme}://{shown}:{port} (public host {cfg.device_api.public_host or '-'})"
    return False, f"{scheme}://{shown}:{port} answers, but not as the device API (HTTP {resp.status})"

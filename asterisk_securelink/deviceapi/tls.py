"""TLS of the device API: the server's `ssl.SSLContext` (TLS 1.2+) and the certificate check of `securelink doctor`.

(The rule that a non-loopback listen address needs TLS is `settings.listen_problem`.)
"""

from __future__ import annotations

import ssl
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509

from asterisk_securelink.errors import KeyFileError

EXPIRY_WARNING: Final = timedelta(days=14)


class TlsError(KeyFileError, ValueError):
    """The certificate or key cannot be used. Messages name the files, never key material."""


def _no_password() -> bytes:
    return b""  # an encrypted key fails to load instead of prompting on the terminal


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context for the PEM certificate (chain) and key, TLS 1.2 or later. Raises TlsError."""
    for name, path in (("tls_cert", cert_file), ("tls_key", key_file)):
        if not path.is_file():
            raise TlsError(f"device_api.{name}: {path} not found")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file, password=_no_password)
    except ssl.SSLError as exc:
        reason = exc.reason or "invalid certificate or key"
        raise TlsError(f"device_api.tls_cert, tls_key: cannot load {cert_file} / {key_file}: {reason}") from None
    except OSError as exc:
        raise TlsError(f"device_api.tls_cert, tls_key: cannot read {cert_file} / {key_file}: {exc.strerror}") from None
    return ctx


def certificate_problem(cert_pem: bytes, now: datetime, warn_within: timedelta = EXPIRY_WARNING) -> str | None:
    """For `securelink doctor`: why the (first) certificate in `cert_pem` is not fit to serve, or None. `now` is
    aware (UTC)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return "not a PEM certificate"
    if now < cert.not_valid_before_utc:
        return f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    if now >= cert.not_valid_after_utc:
        return f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if cert.not_valid_after_utc - now < warn_within:
        return f"expires on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC (within {warn_within.days} days)"
    return None

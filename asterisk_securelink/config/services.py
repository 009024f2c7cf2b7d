"""The sections of what the plugin talks to and serves: `[database]`, `[ari]`, `[ami]`, `[agi]`, `[escrow]`,
`[metrics]`, `[log]` (`[device_api]` is `deviceapi.settings.DeviceApiConfig`).

Each is a frozen dataclass whose fields carry their default, help and range (`core.fields.setting`), and whose
`problems()` checks the section itself, next to its fields. Secrets (the ARI/AMI passwords) are never echoed.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from asterisk_securelink.asterisk.agi_access import AGI_TOKEN, DEFAULT_ALLOW_FROM, check_listen, parse_allow_from
from asterisk_securelink.core.fields import range_problems, setting
from asterisk_securelink.core.listen import listen_refusal, split_listen

PORT = (1, 65535)


@dataclass(frozen=True)
class DatabaseConfig:
    NAME: ClassVar[str] = "database"

    url: str = setting(
        "sqlite:///securelink.sqlite3",
        "`sqlite:///PATH` or `postgresql://user@host/db` (several nodes)",
        note="or postgresql://user@host/dbname",
        skeleton=True,
    )

    def problems(self) -> list[str]:
        if not self.url.startswith(("sqlite", "postgresql", "postgres")):
            return ["database.url: must be a sqlite:// or postgresql:// URL"]
        return []


def async_database_url(url: str, base_dir: Path) -> str:
    """Pick the asyncio driver for a plain URL and resolve a relative SQLite path against `base_dir`."""
    for plain, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            url = driver + url[len(plain) :]
    if url.startswith("sqlite+aiosqlite:///") and not url.startswith("sqlite+aiosqlite:////"):
        rest = url[len("sqlite+aiosqlite:///") :]
        if rest and not rest.startswith(":memory:") and not rest.startswith("file:"):
            url = "sqlite+aiosqlite:///" + str(base_dir / rest)
    return url


@dataclass(frozen=True)
class AriConfig:
    NAME: ClassVar[str] = "ari"

    url: str = setting(
        "http://127.0.0.1:8088",
        "Asterisk REST Interface: `http(s)://host[:port][/path]`; a URL carrying credentials is refused (they go in "
        "`ari.username` and `ari.password`)",
        skeleton=True,
    )
    username: str = setting("securelink", "ARI user (Asterisk `ari.conf`)", skeleton=True)
    password: str = setting("", "ARI password", skeleton=True)
    app: str = setting("securelink", "the Stasis application the dialplan hands calls to", skeleton=True)
    node: str = setting(
        "",
        'this node\'s identity in "the same call" (node + Asterisk uniqueid: a second Stasis entry or a SIP '
        "retransmission of one channel is not a replay; the SIP Call-ID is never used). Unset: Asterisk's system "
        "name, else its entity id, from ARI `asterisk/info` at start; for `securelink agi`, or when ARI does not "
        "answer, the host name",
    )

    def problems(self) -> list[str]:
        """`url` is http(s)://host[:port][/path]. The URL is never echoed: one carrying credentials (user:password@,
        ?api_key=) is refused, since the password is a secret and a URL ends up in logs; they go in ari.username and
        ari.password."""
        out: list[str] = []
        example = "(e.g. http://127.0.0.1:8088)"
        if "@" in self.url or "?" in self.url or "#" in self.url:
            out.append(
                "ari.url: must not carry credentials, a query or a fragment (user:password@, ?api_key=): "
                "put the user in ari.username and the password in ari.password"
            )
        else:
            try:
                url = urllib.parse.urlsplit(self.url)
                port = url.port  # raises on a port that is not 0..65535
            except ValueError:
                out.append(f"ari.url: not a valid URL {example}")
            else:
                if url.scheme not in ("http", "https"):
                    out.append(f"ari.url: must start with http:// or https:// {example}")
                elif not url.hostname or port == 0:
                    out.append(f"ari.url: must name a host and, optionally, a port 1..65535 {example}")
        node = self.node
        if node and (len(node) > 64 or not node.isascii() or not node.isprintable() or " " in node):
            out.append(f"ari.node: must be 1..64 printable ASCII characters without spaces, got {node!r}")
        return out


@dataclass(frozen=True)
class AmiConfig:
    NAME: ClassVar[str] = "ami"

    enabled: bool = setting(
        True,
        "AMI, for `UserEvent: SecureLinkVerdict` and `SecureLinkLockout` (`Kind` source or caller, `Source`, "
        "`Device`, `Count`, `Limit`, `Seconds`); the Stasis app also reads `SecureLinkCallEnd` there (an admitted "
        "call's end; without AMI it follows the call over ARI, one request more per call)",
    )
    host: str = setting("127.0.0.1", "AMI host", skeleton=True)
    port: int = setting(5038, "AMI port", range=PORT, what="a TCP port", skeleton=True)
    username: str = setting("securelink", "AMI user (Asterisk `manager.conf`)", skeleton=True)
    secret: str = setting("", "AMI secret", skeleton=True)

    def problems(self) -> list[str]:
        return range_problems(self.NAME, self)


@dataclass(frozen=True)
class AgiConfig:
    NAME: ClassVar[str] = "agi"

    host: str = setting(
        "127.0.0.1",
        "where `securelink agi` listens (a non-loopback host is refused unless `agi.allow_remote = true`)",
        skeleton=True,
    )
    port: int = setting(4573, "the port `securelink agi` listens on", range=PORT, what="a TCP port", skeleton=True)
    allow_from: tuple[str, ...] = setting(
        DEFAULT_ALLOW_FROM,
        "addresses / networks of the Asterisk hosts FastAGI accepts connections from; others are closed unread",
        note="Asterisk hosts FastAGI accepts connections from",
        skeleton=True,
    )
    allow_remote: bool = setting(
        False,
        "allow a non-loopback `agi.host`",
        note="a non-loopback host must be asked for explicitly",
        skeleton=True,
    )
    result_token: str = setting(
        "",
        "a secret `securelink agi` returns with every verdict (`SECURELINK_AGI_TOKEN`) and the installed dialplan "
        "checks, so a process squatting the AGI port cannot answer `admitted`; `asterisk install` writes it here "
        "and into the dialplan (0640). Empty: the dialplan rejects every AGI verdict",
        shown="(written by install)",
    )

    def problems(self) -> list[str]:
        out = range_problems(self.NAME, self)
        if self.result_token and not AGI_TOKEN.fullmatch(self.result_token):
            out.append("agi.result_token: 16 to 128 characters of A-Z a-z 0-9 _ - (as `asterisk install` writes it)")
        try:
            parse_allow_from(self.allow_from)
        except ValueError as exc:
            out.append(f'agi.allow_from: {exc} (e.g. ["127.0.0.1", "10.0.0.0/24"])')
        problem = check_listen(self.host, self.allow_remote)
        if problem is not None:
            out.append(f"agi.host: {problem}")
        return out


@dataclass(frozen=True)
class EscrowConfig:
    NAME: ClassVar[str] = "escrow"

    public_key_file: str = setting(
        "",
        "per-call key escrow: the X25519 public key (`securelink escrow keygen`) each connected call's key is sealed "
        "to; unset = no per-call keys. The key id is set on every channel as `SECURELINK_CALL_KEY_ID`; the key "
        "itself goes only to legs whose PJSIP endpoint has an explicit `transport` with `protocol = tls`, as header "
        "`X-SecureLink-Call-Key` (unpadded base64url of 32 bytes). Replace the file to rotate: new calls use the new "
        "key, old rows need the old private key (`escrow list` shows which)",
    )
    retention_days: int = setting(
        90,
        "days an escrowed call key is kept ({range}); `securelink escrow purge` deletes older ones",
        range=(1, None),
    )

    def problems(self) -> list[str]:
        return range_problems(self.NAME, self)


@dataclass(frozen=True)
class MetricsConfig:
    NAME: ClassVar[str] = "metrics"

    listen: str = setting(
        "",
        "`host:port` (e.g. `127.0.0.1:9466`) of `/metrics` (Prometheus: `securelink_verdicts_total{result,direction,"
        "mode}`, `securelink_admission_seconds`, `securelink_ari_connected`, `securelink_ari_reconnects_total`, "
        "`securelink_index_refresh_seconds`, `securelink_index_devices`, `securelink_key_strength_bits` (log2(S / "
        "(W·D)): see `doctor`'s key strength), `securelink_lockouts_total{kind}` (kind `source`: a trunk spent its "
        "guess budget; `caller`: a registered number backs off), `securelink_escrow_rows`, "
        "`securelink_audit_buffered`) and `/health` (200 `ok`, or 503 `degraded` with the reasons: ARI down, "
        "database not answering, key index stale); off when empty",
    )
    allow_remote: bool = setting(
        False,
        "a non-loopback `metrics.listen` is refused unless this is `true` (the endpoint has no authentication: put it "
        "behind your scraper's network policy)",
    )

    def problems(self) -> list[str]:
        """`listen` is host:port, on loopback unless `allow_remote` (`core.listen`, as `metrics.parse_listen`)."""
        if not self.listen:
            return []
        try:
            host, _port = split_listen(self.listen)
        except ValueError as exc:
            return [f"metrics.listen: {exc}"]
        problem = listen_refusal(host, self.allow_remote, "; set metrics.allow_remote = true to expose it")
        return [f"metrics.listen: {problem}"] if problem else []


@dataclass(frozen=True)
class LogConfig:
    NAME: ClassVar[str] = "log"

    level: str = setting("INFO", "logging level: `DEBUG`, `INFO`, `WARNING` or `ERROR`")
    json: bool = setting(False, "log lines as JSON objects (one per line)")

    def problems(self) -> list[str]:
        if self.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            return [f"log.level: must be DEBUG, INFO, WARNING or ERROR, got {self.level!r}"]
        return []

"""The pure planner: from a snapshot of the Asterisk config dir, what `install` / `uninstall` change, byte for byte.

Install writes the product's own files under `<etc>/securelink/` and appends one marked `#tryinclude` line to each
of ari.conf, manager.conf, extensions.conf (and http.conf when the admin's lines leave the HTTP server off). The
marker on each line and the header of each file are how uninstall finds exactly what install added. No I/O here:
the shell (`apply`) reads the snapshot and writes the plan.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from asterisk_securelink.asterisk.agi_access import AGI_TOKEN
from asterisk_securelink.dialplan import AGI_TOKEN_PLACEHOLDER
from asterisk_securelink.errors import InputError
from asterisk_securelink.installer import conf, resources
from asterisk_securelink.installer.tomledit import TomlEditError, set_values

MIN_ASTERISK = 16
SUBDIR = "securelink"
INSTALL = "securelink asterisk install"
UNINSTALL = "securelink asterisk uninstall"
_LINE_MARK = f"; added by `{INSTALL}`, removed by `{UNINSTALL}`"
_BREAK_MARK = f"; added (with the line break before it) by `{INSTALL}`, removed by `{UNINSTALL}`"
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_PASSWORD_LINE = re.compile(r"^(password|secret)[ \t]*=[ \t]*(\S+)[ \t]*$", re.MULTILINE)
_RELOADS = {  # admin file -> the reload that makes Asterisk read it and what it includes
    "http.conf": "module reload http",
    "ari.conf": "module reload res_ari.so",
    "manager.conf": "manager reload",
    "extensions.conf": "dialplan reload",
}
_OWN = {  # admin file -> the file of ours it includes
    "ari.conf": f"{SUBDIR}/ari.conf",
    "manager.conf": f"{SUBDIR}/manager.conf",
    "extensions.conf": f"{SUBDIR}/securelink.conf",
    "http.conf": f"{SUBDIR}/http.conf",
}
EDITED = tuple(_OWN)  # the admin's files install appends its line to: never through a link
_OUR_CONTEXT = re.compile(r"(?<![A-Za-z0-9_-])securelink-[A-Za-z0-9_-]+")
REQUIRED = ("asterisk.conf", "ari.conf", "manager.conf", "extensions.conf")


class Refused(InputError):
    """Install/uninstall will not run: one line saying why; nothing was changed."""


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int
    mode: int  # permission bits only


@dataclass(frozen=True)
class Snapshot:
    """The config dir as the planner sees it: file bytes and owners by POSIX path relative to `root`."""

    root: Path
    files: Mapping[str, bytes]
    owners: Mapping[str, Owner]  # every file in `files`, plus "." (the dir) and SUBDIR when it exists
    asterisk_gid: int | None = None  # the group Asterisk runs as, when known


@dataclass(frozen=True)
class Settings:
    """What the planner needs from the securelink config: names, the port ARI is reached on, the TOML file."""

    ari_username: str
    ami_username: str
    app: str
    http_port: int | None  # None: ARI is reached over https, install leaves http.conf alone
    config_path: Path
    config_text: str = field(repr=False)  # holds the current passwords
    config_owner: Owner


@dataclass(frozen=True)
class Secrets:
    ari_password: str = field(repr=False)
    ami_secret: str = field(repr=False)
    agi_token: str = field(default="", repr=False)  # `agi.result_token`: kept when the config has one


@dataclass(frozen=True)
class FileChange:
    path: Path
    before: bytes | None = field(repr=False)  # None: the file does not exist yet
    after: bytes | None = field(repr=False)  # None: the file is removed
    owner: Owner  # for the written file
    what: str  # one line for the summary

    @property
    def verb(self) -> str:
        return "create" if self.before is None else "remove" if self.after is None else "update"


@dataclass(frozen=True)
class Plan:
    root: Path
    changes: tuple[FileChange, ...] = ()
    make_dir: Owner | None = None  # create <root>/securelink first
    remove_dir: bool = False  # remove <root>/securelink afterwards when empty
    reloads: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.changes and self.make_dir is None and not self.remove_dir


def stamp(body: str, comment: str = ";") -> str:
    """`body` under the first line that marks a file as install's, with the checksum of `body` (an edit shows)."""
    digest = hashlib.sha256(body.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{comment} Written by `{INSTALL}` (sha256 {digest} of the lines below); `{UNINSTALL}` removes it.\n{body}"


def stamped(data: bytes, comment: str = ";") -> Literal["intact", "edited"] | None:
    """Whether `data` is a file install wrote, and whether it was edited since; None: not install's."""
    first, _, body = conf.decode(data).partition("\n")
    if not first.startswith(f"{comment} Written by `{INSTALL}`"):
        return None
    return "intact" if stamp(body, comment).partition("\n")[0] == first else "edited"


def include_line(target: str, broke: bool) -> str:
    """The one line install appends (`broke`: it also added the missing line break before it)."""
    return f"#tryinclude {target} {_BREAK_MARK if broke else _LINE_MARK}\n"


def plan_install(snap: Snapshot, settings: Settings, secrets: Secrets, version: tuple[int, int]) -> Plan:
    _check_dir(snap)
    if version[0] < MIN_ASTERISK:
        raise Refused(
            f"Asterisk {version[0]}.{version[1]} is too old: securelink needs Asterisk {MIN_ASTERISK} or later"
        )
    for label, name in (("[ari] username", settings.ari_username), ("[ami] username", settings.ami_username)):
        if not _USERNAME.match(name) or name.lower() == "general":
            raise Refused(f"{label} {name!r} cannot name an Asterisk user: use letters, digits, _ . @ -")
    root = str(snap.root)
    for admin, user, kind in (
        ("ari.conf", settings.ari_username, "ARI"),
        ("manager.conf", settings.ami_username, "AMI"),
    ):
        if user in conf.sections_with_includes(admin, root, snap.files, frozenset({_OWN[admin]})):
            raise Refused(
                f"{admin} already has an {kind} user [{user}] that `{INSTALL}` did not create: remove it, or set "
                f"another {kind.lower()}.username in the securelink config"
            )
    own = _own_files(snap, settings, secrets)
    changes = [c for c in own.values() if c.before != c.after]
    http_on = _http_enabled(snap) or settings.http_port is None
    for admin in _OWN:
        change = _append_include(snap, admin, needed=admin != "http.conf" or not http_on)
        if change is not None:
            changes.append(change)
    reloads = _reloads(snap.root, changes)
    toml = _toml_change(settings, own, agi_token(settings, secrets))
    if toml is not None:
        changes.append(toml)
    make_dir = None if SUBDIR in snap.owners or not changes else snap.owners["."]
    notes = _notes(snap, settings, http_on) + tuple(
        f"{c.path} was edited after install: kept as it is"
        for c in own.values()
        if c.before and stamped(c.before) == "edited"
    )
    return Plan(snap.root, tuple(changes), make_dir, False, reloads, notes)


def plan_uninstall(snap: Snapshot) -> Plan:
    _check_dir(snap)
    changes: list[FileChange] = []
    notes: list[str] = []
    for admin, own in _OWN.items():
        data = snap.files.get(admin)
        if data is None:
            continue
        _check_markers(snap, admin)
        rest = _remove_ours(conf.decode(data), admin)
        # an http.conf that install created holds nothing but its line: remove the file
        after = None if admin == "http.conf" and not rest else conf.encode(rest)
        if after != data:
            changes.append(FileChange(snap.root / admin, data, after, snap.owners[admin], f"remove #tryinclude {own}"))
    for own in _OWN.values():
        data = snap.files.get(own)
        if data is None:
            continue
        state = stamped(data)
        if state is None:
            notes.append(f"{snap.root / own} was not written by `{INSTALL}`: left alone")
            continue
        changes.append(FileChange(snap.root / own, data, None, snap.owners[own], "written by install"))
        if state == "edited":
            notes.append(f"{snap.root / own} was edited after install: removed; the backup keeps your edits")
    removed = {c.path for c in changes if c.after is None}
    left = [p for p in snap.files if p.startswith(SUBDIR + "/") and snap.root / p not in removed]
    remove_dir = SUBDIR in snap.owners and not left and bool(removed)
    if changes:
        notes.extend(leftover_routes(snap))
    return Plan(snap.root, tuple(changes), None, remove_dir, _reloads(snap.root, changes), tuple(notes))


def leftover_routes(snap: Snapshot) -> list[str]:
    """The admin's own dialplan lines that send calls into a `securelink-*` context: once the contexts are gone,
    such a call fails (603 Decline)."""
    files = conf.included_files("extensions.conf", str(snap.root), snap.files, frozenset({_OWN["extensions.conf"]}))
    found = [
        f"{snap.root / path}:{n}: {line}"
        for path in files
        for n, line in conf.lines_naming(_OUR_CONTEXT, path, snap.files)
    ]
    if not found:
        return []
    head = "your dialplan still sends calls into securelink's contexts (removed now: such a call gets 603 Decline);"
    return ["\n  ".join([f"{head} change or remove these lines, then `dialplan reload`:", *found])]


# -- the pieces -------------------------------------------------------------------------------------------
def _check_dir(snap: Snapshot) -> None:
    missing = [name for name in REQUIRED if name not in snap.files]
    if missing:
        raise Refused(f"{snap.root} is not an Asterisk config directory (no {', '.join(missing)}): pass --etc DIR")


def _own_files(snap: Snapshot, settings: Settings, secrets: Secrets) -> dict[str, FileChange]:
    """Our files under SUBDIR by the admin file that includes each, as they must be (existing passwords kept)."""
    cfg = settings.config_path
    ari = _user_file("ari.conf.sample", settings.ari_username, _password(snap, "ari.conf", secrets.ari_password))
    ami = _user_file("manager.conf.sample", settings.ami_username, _password(snap, "manager.conf", secrets.ami_secret))
    dialplan = conf.decode(resources.read("dialplan", "securelink.conf"))
    dialplan = dialplan.replace("Stasis(securelink,", f"Stasis({settings.app},")
    dialplan = dialplan.replace(AGI_TOKEN_PLACEHOLDER, agi_token(settings, secrets))
    wanted = {  # admin file -> (our file's text, holds a secret)
        "ari.conf": (f"; The ARI user of `securelink run`; its password is also [ari] password in {cfg}.\n{ari}", True),
        "manager.conf": (f"; The AMI user of securelink; its secret is also [ami] secret in {cfg}.\n{ami}", True),
        "extensions.conf": (dialplan, True),  # holds agi.result_token
    }
    if settings.http_port is not None and (f"{SUBDIR}/http.conf" in snap.files or not _http_enabled(snap)):
        wanted["http.conf"] = (_http_file(snap, settings.http_port), False)
    out: dict[str, FileChange] = {}
    for admin, (text, secret) in wanted.items():
        path = _OWN[admin]
        before = snap.files.get(path)
        state = None if before is None else stamped(before)
        if before is not None and state is None:
            raise Refused(
                f"{snap.root / path} exists and was not written by `{INSTALL}` (a manual install?): move it away first"
            )
        neighbour = snap.owners.get(admin) or snap.owners["asterisk.conf"]
        owner = (
            Owner(neighbour.uid, snap.asterisk_gid if snap.asterisk_gid is not None else neighbour.gid, 0o640)
            if secret
            else neighbour
        )
        after = before if state == "edited" else conf.encode(stamp(text))  # an admin's edits are kept
        out[admin] = FileChange(snap.root / path, before, after, owner, _describe(admin, settings))
    return out


def _describe(admin: str, settings: Settings) -> str:
    return {
        "ari.conf": f"ARI user [{settings.ari_username}]",
        "manager.conf": f"AMI user [{settings.ami_username}]",
        "extensions.conf": "the securelink dialplan contexts",
        "http.conf": "HTTP server on 127.0.0.1 (ARI runs on it)",
    }[admin]


def _user_file(sample: str, user: str, password: str) -> str:
    """The `[securelink]` section of the product's sample, renamed to `user`, with `password`/`secret` set."""
    text = conf.decode(resources.read("dialplan", sample))
    start = text.index("[securelink]")
    end = text.find("\n[", start)
    section = text[start : None if end < 0 else end + 1].rstrip("\n") + "\n"
    section = section.replace("[securelink]", f"[{user}]", 1)
    return _PASSWORD_LINE.sub(lambda m: f"{m.group(1)} = {password}", section)


def agi_token(settings: Settings, secrets: Secrets) -> str:
    """The config's `agi.result_token` when it has a valid one (a second install keeps it), else the generated one."""
    try:
        current = tomllib.loads(settings.config_text).get("agi", {})
    except tomllib.TOMLDecodeError:
        current = {}
    token = current.get("result_token") if isinstance(current, dict) else None
    if isinstance(token, str) and AGI_TOKEN.fullmatch(token):
        return token
    if not AGI_TOKEN.fullmatch(secrets.agi_token):
        raise Refused("no valid agi.result_token to install (an internal error: the planner was given none)")
    return secrets.agi_token


def _password(snap: Snapshot, admin: str, generated: str) -> str:
    """The password already in our user file (a second install keeps it), else the generated one."""
    data = snap.files.get(_OWN[admin])
    if data is not None and stamped(data) is not None:
        m = _PASSWORD_LINE.search(conf.decode(data))
        if m:
            return m.group(2)
    return generated


def _http_enabled(snap: Snapshot) -> bool:
    """Whether the admin's own http.conf lines turn the HTTP server on (our include left out)."""
    data = snap.files.get("http.conf")
    if data is None:
        return False
    admin_lines = [line for line in conf.decode(data).splitlines(keepends=True) if not _is_ours(line, "http.conf")]
    return conf.is_true(conf.last_value("".join(admin_lines), "general", "enabled"))


def _http_file(snap: Snapshot, port: int) -> str:
    data = snap.files.get("http.conf", b"")
    header = "[general](+)" if "general" in conf.sections(conf.decode(data)) else "[general]"
    return (
        "; http.conf leaves Asterisk's HTTP server off; ARI runs on it: on, loopback only.\n"
        f"{header}\nenabled = yes\nbindaddr = 127.0.0.1\nbindport = {port}\n"
    )


def _is_ours(line: str, admin: str) -> bool:
    return line in (include_line(_OWN[admin], False), include_line(_OWN[admin], True))


def _append_include(snap: Snapshot, admin: str, needed: bool) -> FileChange | None:
    data = snap.files.get(admin)
    text = conf.decode(data or b"")
    if any(_is_ours(line, admin) for line in text.splitlines(keepends=True)):
        return None
    _check_markers(snap, admin)
    target = _OWN[admin]
    prefix = str(snap.root).rstrip("/") + "/"
    if target in [t.removeprefix(prefix) for t in conf.includes(text)]:
        raise Refused(f"{snap.root / admin} already includes {target} (a manual install?): remove that line first")
    if not needed:
        return None
    broke = bool(text) and not text.endswith("\n")
    after = conf.encode(text + ("\n" if broke else "") + include_line(target, broke))
    owner = snap.owners.get(admin) or snap.owners["asterisk.conf"]
    return FileChange(snap.root / admin, data, after, owner, f"append #tryinclude {target}")


def _remove_ours(text: str, admin: str) -> str:
    """`text` without install's line; the line break it added before it goes too while its line is still last."""
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    for i, line in enumerate(lines):
        if not _is_ours(line, admin):
            kept.append(line)
        elif line == include_line(_OWN[admin], True) and i == len(lines) - 1 and kept and kept[-1].endswith("\n"):
            kept[-1] = kept[-1][:-1]
    return "".join(kept)


def _check_markers(snap: Snapshot, admin: str) -> None:
    """Refuse when a line carries install's marker but is not exactly install's line (edited by hand)."""
    for line in conf.decode(snap.files.get(admin, b"")).splitlines(keepends=True):
        if line.lstrip().startswith("#") and INSTALL in line and not _is_ours(line, admin):
            shown = line.strip()[:60]
            raise Refused(f"{snap.root / admin}: the line {shown!r} was changed by hand: restore or remove it")


def _toml_change(settings: Settings, own: Mapping[str, FileChange], token: str | None = None) -> FileChange | None:
    """Write the ARI password and AMI secret of our user files, and the AGI token of our dialplan, into the
    securelink config, if it differs."""
    try:
        current = tomllib.loads(settings.config_text)
    except tomllib.TOMLDecodeError:
        raise Refused(f"{settings.config_path} is not valid TOML: fix it first") from None
    updates: dict[tuple[str, str], str] = {}
    for table, key, admin in (("ari", "password", "ari.conf"), ("ami", "secret", "manager.conf")):
        m = _PASSWORD_LINE.search(conf.decode(own[admin].after or b""))
        section = current.get(table)
        if m and (section.get(key) if isinstance(section, dict) else None) != m.group(2):
            updates[(table, key)] = m.group(2)
    agi = current.get("agi")
    if token is not None and (agi.get("result_token") if isinstance(agi, dict) else None) != token:
        updates[("agi", "result_token")] = token
    if not updates:
        return None
    try:
        text = set_values(settings.config_text, updates)
    except TomlEditError as exc:
        raise Refused(f"{settings.config_path}: {exc}") from None
    owner = Owner(settings.config_owner.uid, settings.config_owner.gid, 0o600)
    what = ", ".join(f"[{t}] {k}" for t, k in updates)
    return FileChange(settings.config_path, settings.config_text.encode(), text.encode(), owner, f"set {what}")


def _reloads(root: Path, changes: list[FileChange]) -> tuple[str, ...]:
    touched = {c.path for c in changes}
    return tuple(
        command for admin, command in _RELOADS.items() if root / admin in touched or root / _OWN[admin] in touched
    )


def _notes(snap: Snapshot, settings: Settings, http_on: bool) -> tuple[str, ...]:
    notes: list[str] = []
    http = conf.decode(snap.files.get("http.conf", b""))
    port = conf.last_value(http, "general", "bindport")
    if settings.http_port is None:
        notes.append("[ari] url is https: set up Asterisk's TLS HTTP server (http.conf tlsenable) yourself")
    elif http_on and (port or "8088") != str(settings.http_port):
        notes.append(f"http.conf serves on port {port or 8088} but [ari] url says {settings.http_port}: align them")
    if not conf.is_true(conf.last_value(conf.decode(snap.files["manager.conf"]), "general", "enabled")):
        notes.append("manager.conf leaves AMI off: securelink's verdict events and doctor's dialplan check need it")
    if conf.last_value(conf.decode(snap.files["ari.conf"]), "general", "enabled") in ("no", "false", "0", "off"):
        notes.append("ari.conf turns ARI off (enabled = no): securelink needs it on")
    return tuple(notes)

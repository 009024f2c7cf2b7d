"""What the `securelink-device` commands share: reading a URI argument, file or stdin, and the state file.

The state file (mode 0600, replaced whole) is `enrollment.DeviceFile`: the SLK1 state (`L`, `H`) and, for a device
enrolled through the device API, its enrollment (secret, parameters, server, the platform's clock offset). Errors
are `DeviceCliError`: one line on stderr, exit 2; no message holds a secret, a URI or a code.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Final

from asterisk_securelink import keyfile
from asterisk_securelink.core.ascii import ascii_lower
from asterisk_securelink.core.numbers import safe_display
from asterisk_securelink.core.provisioning import Provisioning, ProvisioningError
from asterisk_securelink.device import reference as device
from asterisk_securelink.device.enrollment import DeviceFile, Enrollment, from_json, to_json
from asterisk_securelink.errors import InputError

MAX_URI_BYTES: Final = 4096  # a provisioning URI is a few hundred bytes
MAX_STATE_BYTES: Final = 8192  # a state file is about 150 bytes, 700 with an enrollment
URI_PREFIX: Final = "securelink:"
STATE_NAME: Final = "state.json"


class DeviceCliError(InputError):
    """Bad input: printed as one line on stderr, exit 2."""


def warn(message: str) -> None:
    print(f"securelink-device: warning: {message}", file=sys.stderr)


def shown_path(path: Path) -> str:
    return safe_display(str(path), 200)


# -- a URI from an argument, a file or stdin -------------------------------------------------------------------
def read_source(source: str, *, argument_warning: str | None) -> tuple[str, str]:
    """(text, where) from `source`: `-` (stdin), a `securelink:` URI argument (warned about with
    `argument_warning`, if any) or a file path."""
    if source == "-":
        text, where = sys.stdin.read(MAX_URI_BYTES + 1), "stdin"
    elif ascii_lower(source[: len(URI_PREFIX)]) == URI_PREFIX:
        if argument_warning:
            warn(argument_warning)
        text, where = source, "the argument"
    else:
        text, where = _read_file(Path(source)), f"file {safe_display(source)}"
    if len(text.encode("utf-8", "replace")) > MAX_URI_BYTES:
        raise DeviceCliError(f"{where} holds more than {MAX_URI_BYTES} bytes: not a securelink URI")
    return text, where


def uri_in(text: str, names: Sequence[str] = ("provisioning_uri",)) -> str:
    """The URI itself (without the line ending a file or stdin ends it with: a space or tab anywhere stays, for the
    URI's own rules to refuse), or the first of `names` found in JSON output of `securelink device add --json` saved
    to a file."""
    if not text.lstrip().startswith("{"):
        return text.removesuffix("\n").removesuffix("\r")
    try:
        data = json.loads(text)
    except ValueError:
        raise DeviceCliError("the input looks like JSON but does not parse") from None
    for name in names:
        uri = data.get(name) if isinstance(data, dict) else None
        if isinstance(uri, str):
            return uri
    raise DeviceCliError(f'the JSON input has no "{names[0]}" string')


def read_provisioning(source: str) -> Provisioning:
    """The provisioning in `source`: a URI, `-` (stdin) or a file path. Errors never contain the URI."""
    text, where = read_source(source, argument_warning=(
        "the provisioning URI on the command line contains the device secret and is now in your shell "
        "history; pass a file (mode 0600) or '-' (stdin) instead"))  # fmt: skip
    try:
        return device.load(uri_in(text))
    except ProvisioningError as exc:
        raise DeviceCliError(f"{where}: {exc}") from None


def _read_file(path: Path) -> str:
    shown = safe_display(str(path))
    try:
        found = keyfile.read_named(path, MAX_URI_BYTES + 1, shown, follow_symlinks=True)
    except keyfile.UnreadableKeyFile as exc:
        if exc.missing:
            raise DeviceCliError(
                f"{shown}: no such file (give a securelink:// URI, a file holding it, or '-' for stdin)"
            ) from None
        raise DeviceCliError(str(exc)) from None
    if found.shared:
        warn(f"{shown} holds a secret but has mode {found.mode:04o}; fix: chmod 600 {shown}")
    try:
        return found.data.decode("utf-8")
    except UnicodeDecodeError:
        raise DeviceCliError(f"{shown} is not a text file holding a securelink URI") from None


# -- the state file ------------------------------------------------------------------------------------------
def default_state_path() -> Path:
    """`$XDG_CONFIG_HOME/securelink-device/state.json` (`~/.config/...` without it): an enrolled device's state."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "securelink-device" / STATE_NAME


def state_path(option: str | None) -> Path:
    return default_state_path() if option is None else Path(option)


def load_file(path: Path) -> DeviceFile | None:
    """The state file at `path`, None when there is none. A file others can read or write is warned about (they
    could undo its spent epochs, or read the secret of an enrollment)."""
    shown = shown_path(path)
    try:
        found = keyfile.read_named(path, MAX_STATE_BYTES + 1, f"--state: {shown}")
    except keyfile.UnreadableKeyFile as exc:
        if exc.missing:
            return None
        raise DeviceCliError(str(exc)) from None
    try:
        if len(found.data) > MAX_STATE_BYTES:
            raise device.StateError("too large for a device state")
        file = from_json(found.data.decode("utf-8"))
    except (device.StateError, UnicodeDecodeError) as exc:
        raise DeviceCliError(f"--state: {shown}: {exc}") from None
    if found.shared and file.enrollment is not None:
        warn(f"{shown} holds the device secret but has mode {found.mode:04o}; fix: chmod 600 {shown}")
    elif found.shared:
        warn(f"{shown} can be changed by others (mode {found.mode:04o}), who could undo its spent epochs; "
             f"fix: chmod 600 {shown}")  # fmt: skip
    return file


def load_enrolled(path: Path) -> tuple[DeviceFile, Enrollment]:
    """The state file of a device enrolled through the API. Raises DeviceCliError when there is none."""
    file = load_file(path)
    if file is None or file.enrollment is None:
        what = "no state file" if file is None else "a state file without an enrollment"
        raise DeviceCliError(
            f"{shown_path(path)}: {what}; enroll first (securelink-device enroll URI|CODE), or give --state FILE"
        )
    return file, file.enrollment


def read_state(path: Path | None, prov: Provisioning) -> tuple[device.DeviceState, Enrollment | None]:
    """The state kept in `path` for this provisioning (a fresh one when there is no file, or one for another key_id)
    and the file's enrollment when it is this key_id's. Another key_id's enrollment is an error, never replaced."""
    if path is None:
        return device.state_for(prov, None), None
    file = load_file(path)
    if file is None:
        return device.state_for(prov, None), None
    shown = shown_path(path)
    if file.enrollment is not None and file.state.key_id != prov.key_id:
        raise DeviceCliError(f"--state: {shown} holds the enrollment of key_id {file.state.key_id}; leave out "
                             "URI_OR_FILE to use it, or give another --state file")  # fmt: skip
    try:
        fresh = device.state_for(prov, file.state)
    except device.StateError as exc:
        raise DeviceCliError(f"--state: {shown}: {exc}") from None
    if fresh is not file.state:
        warn(f"{shown} was kept for another key_id; starting afresh for this enrollment (a rotation)")
    return fresh, file.enrollment


def save_file(path: Path, file: DeviceFile, *, make_parent: bool = False) -> None:
    """Record `file` (mode 0600, replaced whole) before anything is printed: a key is never shown unrecorded.
    `make_parent` creates a missing directory (mode 0700)."""
    data = (to_json(file) + "\n").encode("utf-8")

    def write(f: BinaryIO) -> None:
        f.write(data)

    try:
        if make_parent:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        keyfile.replace_private(path, write, prefix=".securelink-state-")
    except OSError as exc:
        raise DeviceCliError(f"--state: cannot write {shown_path(path)}: {exc.strerror or exc}") from None


def write_state(path: Path | None, state: device.DeviceState, enrollment: Enrollment | None) -> None:
    if path is not None:
        save_file(path, DeviceFile(state, enrollment))


def check_writable(path: Path) -> None:
    """Fail now, before a one-time code is spent, if the state file could not be written afterwards."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise DeviceCliError(f"--state: cannot write {shown_path(path)} (permission denied)")


def write_private(path: Path, write: Callable[[BinaryIO], None], option: str, prefix: str) -> None:
    """Write `path` readable by its owner only (`keyfile.replace_private`), with this tool's error messages."""
    try:
        keyfile.replace_private(path, write, prefix=prefix)
    except keyfile.UnwritableDirectoryError as exc:
        raise DeviceCliError(f"{option}: cannot write in {shown_path(path.parent)}: {exc.strerror}") from None
    except OSError as exc:
        raise DeviceCliError(f"{option}: cannot write {shown_path(path)}: {exc.strerror or exc}") from None

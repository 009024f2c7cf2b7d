"""The product's own files the installer writes: the dialplan (`dialplan/`) and the systemd units (`contrib/systemd/`).

One source each, at the top of the repository. A built wheel carries them as package data of
`asterisk_securelink.installer.dialplan` / `.systemd` (setup.py maps those packages onto the top-level folders);
a source checkout that was not built reads them where they are.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[2]
_FOLDERS = {"dialplan": "dialplan", "systemd": "contrib/systemd"}


def read(kind: str, name: str) -> bytes:
    """The bytes of `name` in the product's `kind` folder ("dialplan" or "systemd")."""
    return _locate(kind, name).read_bytes()


def names(kind: str, suffix: str) -> list[str]:
    """The file names in the `kind` folder ending in `suffix`, sorted."""
    folder = _folder(kind)
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(suffix) and p.is_file())


def _folder(kind: str) -> resources.abc.Traversable:
    packaged = resources.files("asterisk_securelink.installer") / kind
    if packaged.is_dir():
        return packaged
    checkout = _CHECKOUT / _FOLDERS[kind]
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"the installer's {kind} files are missing from this installation (reinstall the package)")


def _locate(kind: str, name: str) -> resources.abc.Traversable:
    path = _folder(kind) / name
    if not path.is_file():
        raise FileNotFoundError(f"the installer's file {kind}/{name} is missing (reinstall the package)")
    return path

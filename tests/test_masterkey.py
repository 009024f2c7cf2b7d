from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from asterisk_securelink import masterkey
from asterisk_securelink.masterkey import MasterKeyError


def test_create_is_0600_and_loads(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        key = masterkey.create(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert masterkey.load(tmp_path / "k") == key and len(key) == 32


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    masterkey.create(tmp_path / "k")
    before = (tmp_path / "k").read_bytes()
    with pytest.raises(MasterKeyError, match="already exists"):
        masterkey.create(tmp_path / "k")
    assert (tmp_path / "k").read_bytes() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_refuses_group_or_other_access(tmp_path: Path, mode: int) -> None:
    masterkey.create(tmp_path / "k")
    os.chmod(tmp_path / "k", mode)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        masterkey.load(tmp_path / "k")


@pytest.mark.parametrize(
    "content", [b"", b"not base64!!", base64.b64encode(b"\x01" * 31), base64.b64encode(b"\x01" * 33)]
)
def test_refuses_malformed_without_echoing_content(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "k"
    p.write_bytes(content)
    os.chmod(p, 0o600)
    with pytest.raises(MasterKeyError, match="malformed") as e:
        masterkey.load(p)
    if content:
        assert content.decode(errors="replace") not in str(e.value)


def test_missing_and_symlink(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="securelink init"):
        masterkey.load(tmp_path / "absent")
    masterkey.create(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(MasterKeyError):
        masterkey.load(tmp_path / "link")

"""`keyfile`: the shared open/read/write of files holding a secret (master key, provisioning URI, QR PNG)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

import pytest

from asterisk_securelink import keyfile
from asterisk_securelink.errors import KeyFileError


def test_create_private_is_0600_whatever_the_umask_and_never_overwrites(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        keyfile.create_private(tmp_path / "k", b"secret")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        keyfile.create_private(tmp_path / "k", b"other")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        keyfile.create_private(tmp_path / "dangling", b"other")
    assert (tmp_path / "k").read_bytes() == b"secret" and not (tmp_path / "nowhere").exists()


def test_read_private_reports_mode_and_owner_and_refuses_what_is_not_a_file(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"0123456789")
    path.chmod(0o640)
    found = keyfile.read_private(path, 4)
    assert (found.data, found.mode, found.shared, found.owned) == (b"0123", 0o640, True, True)
    with pytest.raises(keyfile.NotRegularFileError):
        keyfile.read_private(tmp_path, 4)
    with pytest.raises(FileNotFoundError):
        keyfile.read_private(tmp_path / "absent", 4)
    (tmp_path / "link").symlink_to(path)
    with pytest.raises(OSError, match="symbolic links"):
        keyfile.read_private(tmp_path / "link", 4)
    assert keyfile.read_private(tmp_path / "link", 4, follow_symlinks=True).data == b"0123"


def test_read_named_says_why_a_key_file_cannot_be_opened_in_one_way(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"secret")
    assert keyfile.read_named(path, 64, "the key").data == b"secret"
    cases = [
        (tmp_path / "absent", "the key not found", True),
        (tmp_path, "the key is not a regular file", False),
        (path / "below-a-file", "the key cannot be opened: Not a directory", False),
    ]
    for where, message, missing in cases:
        with pytest.raises(keyfile.UnreadableKeyFile) as caught:
            keyfile.read_named(where, 64, "the key")
        assert (str(caught.value), caught.value.missing) == (message, missing)
        assert isinstance(caught.value, KeyFileError) and caught.value.__cause__ is None


def test_read_named_says_a_refused_symlink_is_one_and_follows_it_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"secret")
    (tmp_path / "link").symlink_to(path)
    with pytest.raises(keyfile.UnreadableKeyFile, match=r"^the key cannot be opened: it is a symbolic link; name"):
        keyfile.read_named(tmp_path / "link", 64, "the key")
    assert keyfile.read_named(tmp_path / "link", 64, "the key", follow_symlinks=True).data == b"secret"
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(keyfile.UnreadableKeyFile, match=r"symbolic links$"):  # a loop is not called "a symbolic link"
        keyfile.read_named(tmp_path / "loop", 64, "the key", follow_symlinks=True)


def test_read_private_tells_a_file_others_may_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "k.pub"
    path.write_bytes(b"public")
    for mode, shared, writable in (
        (0o644, True, False),
        (0o600, False, False),
        (0o664, True, True),
        (0o602, True, True),
    ):
        path.chmod(mode)
        found = keyfile.read_private(path, 64)
        assert (found.shared, found.writable_by_others) == (shared, writable), oct(mode)


def test_replace_private_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(b"old")
    path.chmod(0o644)

    def fail(f: BinaryIO) -> None:
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        keyfile.replace_private(path, fail)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    keyfile.replace_private(path, lambda f: f.write(b"new") and None)
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(keyfile.UnwritableDirectoryError):
        keyfile.replace_private(tmp_path / "missing" / "x.png", lambda f: None)

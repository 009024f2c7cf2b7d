"""Per-call key escrow: HPKE to the escrow public key, bound to its row; the database alone holds no key."""

from __future__ import annotations

import dataclasses
import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text, update

from asterisk_securelink import config
from asterisk_securelink.callkeys import escrow
from asterisk_securelink.callkeys.book import CallBook, open_row
from asterisk_securelink.callkeys.service import CallKeys
from asterisk_securelink.outbound.hooks import CallHooks, TlsLegs, call_key_header_value, pjsip_endpoint_name
from asterisk_securelink.store.models import CallKey, utcnow
from asterisk_securelink.store.store import Store


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, Path]:
    priv, pub = tmp_path / "escrow.key", tmp_path / "escrow.pub"
    escrow.generate(priv, pub)
    return priv, pub


def book(tmp_path: Path, store: Store, pub: Path, days: int = 90) -> CallBook:
    cfg = config.build({"escrow": {"public_key_file": str(pub), "retention_days": days}}, {}, tmp_path)
    return CallBook(cfg, store)


def test_keygen_modes_and_no_overwrite(keypair: tuple[Path, Path]) -> None:
    priv, pub = keypair
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    before = priv.read_bytes()
    with pytest.raises(escrow.EscrowError, match="already exists"):
        escrow.generate(priv, pub)
    assert priv.read_bytes() == before
    os.chmod(priv, 0o640)
    with pytest.raises(escrow.EscrowError, match="chmod 600"):
        escrow.load_private(priv)


def _foreign_owner(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `path` owned by someone other than this process's user (and not root)."""
    if os.geteuid() == 0:
        os.chown(path, 4242, -1)
    else:
        real = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: real + 1)


def test_public_key_file_is_checked_like_the_master_key(
    keypair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever can rewrite the public key file chooses who can open every future call key."""
    _priv, pub = keypair
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    for mode in (0o644, 0o600, 0o444):
        os.chmod(pub, mode)
        escrow.load_public(pub)  # readable by anyone is fine: it is a public key
    for mode in (0o664, 0o646, 0o666):
        os.chmod(pub, mode)
        with pytest.raises(escrow.EscrowError, match=f"mode {mode:04o}.*chmod go-w {pub}"):
            escrow.load_public(pub)
    os.chmod(pub, 0o644)
    link = tmp_path / "link.pub"
    link.symlink_to(pub)
    with pytest.raises(escrow.EscrowError, match="cannot be opened"):
        escrow.load_public(link)  # opened with O_NOFOLLOW: a link could be re-pointed
    with pytest.raises(escrow.EscrowError, match="not a regular file"):
        escrow.load_public(tmp_path)
    with pytest.raises(escrow.EscrowError, match="not found"):
        escrow.load_public(tmp_path / "absent.pub")
    _foreign_owner(pub, monkeypatch)
    with pytest.raises(escrow.EscrowError, match="owned by"):
        escrow.load_public(pub)


def test_load_private_checks_the_file_it_reads(
    keypair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mode is checked on the open file: a file swapped in after the check is never the one read."""
    priv, _pub = keypair
    original = escrow.load_private(priv)
    other = tmp_path / "other.key"
    escrow.generate(other, tmp_path / "other.pub")
    os.chmod(other, 0o644)
    swapped: list[str] = []

    def swap() -> None:
        if not swapped:
            swapped.append("x")
            os.replace(other, priv)  # an attacker replaces the checked file by a world-readable one

    real_stat, real_open = Path.stat, os.open

    def stat_then_swap(self: Path, *args: object, **kwargs: object) -> os.stat_result:
        st = real_stat(self, *args, **kwargs)  # type: ignore[arg-type]
        if self == priv:
            swap()
        return st

    def open_then_swap(path: object, *args: object, **kwargs: object) -> int:
        fd = real_open(path, *args, **kwargs)  # type: ignore[arg-type]
        if str(path) == str(priv):
            swap()
        return int(fd)

    monkeypatch.setattr(Path, "stat", stat_then_swap)
    monkeypatch.setattr(os, "open", open_then_swap)
    loaded = escrow.load_private(priv)
    monkeypatch.undo()
    assert swapped  # the swap did happen, after the file was checked or opened
    assert escrow.key_version(loaded.public_key()) == escrow.key_version(original.public_key())
    with pytest.raises(escrow.EscrowError, match="chmod 600"):
        escrow.load_private(priv)  # the swapped-in file itself is refused
    link = tmp_path / "link.key"
    link.symlink_to(other if other.exists() else priv)
    with pytest.raises(escrow.EscrowError, match="cannot be opened"):
        escrow.load_private(link)


@pytest.mark.parametrize("which", ["private", "public"])
def test_keygen_never_overwrites_a_file_created_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    """The existence check is only for the message: the files are created with link(2), which never replaces."""
    priv, pub = tmp_path / "escrow.key", tmp_path / "escrow.pub"
    target = priv if which == "private" else pub
    real_fsync = os.fsync

    def fsync_and_intrude(fd: int) -> None:
        real_fsync(fd)
        if not target.exists():
            target.write_bytes(b"someone else's file")  # created between the check and the write

    monkeypatch.setattr(os, "fsync", fsync_and_intrude)
    with pytest.raises(escrow.EscrowError, match="already exists"):
        escrow.generate(priv, pub)
    monkeypatch.undo()
    assert target.read_bytes() == b"someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temporary, no half pair left


async def test_issue_store_open(store: Store, keypair: tuple[Path, Path], tmp_path: Path) -> None:
    priv, pub = keypair
    issued = await book(tmp_path, store, pub).issue_call_key("call-1", None, "outbound")
    assert issued is not None and len(issued.key) == 32
    assert issued.key.hex() not in repr(issued)
    [row] = await store.get_call_keys("call-1")
    assert row.id == issued.key_id and row.key_version == escrow.key_version(escrow.load_public(pub))
    assert open_row(row, priv) == issued.key
    # the database alone reveals nothing: the plaintext key is nowhere in any column
    async with store.engine.connect() as conn:
        dump = b"".join(
            repr(tuple(r)).encode() + b"".join(v for v in r if isinstance(v, bytes))
            for r in await conn.execute(text("SELECT * FROM call_keys"))
        )
    assert issued.key not in dump and issued.key.hex().encode() not in dump
    audit = [e.action for e in await store.list_audit()]
    assert "escrow.store" in audit


async def test_ciphertext_moved_to_another_row_does_not_open(
    store: Store, keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    priv, pub = keypair
    b = book(tmp_path, store, pub)
    await b.issue_call_key("call-a", None, "outbound")
    await b.issue_call_key("call-b", None, "outbound")
    [a] = await store.get_call_keys("call-a")
    [bb] = await store.get_call_keys("call-b")
    async with store.transaction() as s:
        await s.execute(update(CallKey).where(CallKey.id == bb.id).values(enc=a.enc, wrapped_key=a.wrapped_key))
    [moved] = await store.get_call_keys("call-b")
    with pytest.raises(escrow.EscrowError, match="does not open"):
        open_row(moved, priv)
    for field, value in (("call_id", "x"), ("direction", "inbound"), ("device_id", 9)):
        with pytest.raises(escrow.EscrowError):
            escrow.open_sealed(
                escrow.Sealed(a.enc, a.wrapped_key),
                escrow.load_private(priv),
                dataclasses.replace(
                    escrow.RowBinding(a.id, a.call_id, a.device_id, a.direction, a.created_at, a.key_version),
                    **{field: value},
                ),
            )


async def test_rotation_new_key_for_new_calls_old_rows_still_open(store: Store, tmp_path: Path) -> None:
    old_priv, pub = tmp_path / "old.key", tmp_path / "escrow.pub"
    old_version = escrow.generate(old_priv, pub)
    b = book(tmp_path, store, pub)
    await b.issue_call_key("before", None, "outbound")
    new_priv, new_pub = tmp_path / "new.key", tmp_path / "new.pub"
    new_version = escrow.generate(new_priv, new_pub)
    os.replace(new_pub, pub)  # the administrator installs the new public key
    await b.issue_call_key("after", None, "outbound")
    [before] = await store.get_call_keys("before")
    [after] = await store.get_call_keys("after")
    assert (before.key_version, after.key_version) == (old_version, new_version)
    assert len(open_row(before, old_priv)) == 32
    assert len(open_row(after, new_priv)) == 32
    with pytest.raises(escrow.EscrowError, match=old_version):
        open_row(before, new_priv)


async def test_no_escrow_key_configured_issues_nothing(store: Store, tmp_path: Path) -> None:
    cfg = config.build({}, {}, tmp_path)
    assert await CallBook(cfg, store).issue_call_key("c", None, "outbound") is None
    assert await store.get_call_keys("c") == []


async def test_purge_deletes_only_expired(store: Store, keypair: tuple[Path, Path], tmp_path: Path) -> None:
    _, pub = keypair
    b = book(tmp_path, store, pub, days=1)
    await b.issue_call_key("old", None, "outbound")
    await b.issue_call_key("new", None, "outbound")
    async with store.transaction() as s:
        await s.execute(
            update(CallKey).where(CallKey.call_id == "old").values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert await store.purge_call_keys(utcnow(), "test") == 1
    assert [r.call_id for r in await store.list_call_keys()] == ["new"]


# -- the outbound hooks: escrowed before the legs ring, sent only on TLS legs ------------------------------------
class FakeConfigSource:
    """ARI's dynamic config, as a dict: (type, id) -> fields. Counts lookups; can fail."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, str]], fail: bool = False) -> None:
        self.objects = objects
        self.fail = fail
        self.lookups = 0

    async def get_config_object(self, config_class: str, object_type: str, object_id: str) -> dict[str, str] | None:
        self.lookups += 1
        if self.fail:
            raise ConnectionError("ARI down")
        assert config_class == "res_pjsip"
        return self.objects.get((object_type, object_id))


PJSIP = {
    ("endpoint", "carrier"): {"transport": "transport-udp"},
    ("endpoint", "carrier-tls"): {"transport": "transport-tls"},
    ("endpoint", "desk1001"): {"transport": ""},
    ("transport", "transport-udp"): {"protocol": "udp"},
    ("transport", "transport-tls"): {"protocol": "tls"},
}


@pytest.mark.parametrize(
    ("dial", "name"),
    [
        ("PJSIP/15550001111@carrier", "carrier"),
        ("PJSIP/desk1001", "desk1001"),
        ("pjsip/desk1001/sip:1001@10.0.0.1:5061", "desk1001"),
        ("SIP/1001", None),
        ("PJSIP/", None),
        ("Local/100@ctx", None),
    ],
)
def test_pjsip_endpoint_name(dial: str, name: str | None) -> None:
    assert pjsip_endpoint_name(dial) == name


async def test_tls_legs_fail_closed_and_cache() -> None:
    src = FakeConfigSource(PJSIP)
    tls = TlsLegs(src)
    assert await tls.is_tls("PJSIP/1555@carrier-tls") is True
    assert await tls.is_tls("PJSIP/1555@carrier") is False
    assert await tls.is_tls("PJSIP/desk1001") is False  # no explicit transport: cannot tell, so not TLS
    assert await tls.is_tls("PJSIP/1555@nosuch") is False
    assert await tls.is_tls("SIP/1555") is False
    before = src.lookups
    assert await tls.is_tls("PJSIP/1666@carrier-tls") is True  # cached per endpoint
    assert src.lookups == before
    down = TlsLegs(FakeConfigSource(PJSIP, fail=True))
    assert await down.is_tls("PJSIP/1555@carrier-tls") is False


async def test_call_hooks_send_the_escrowed_key_only_on_tls_legs(
    store: Store, keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    priv, pub = keypair
    b = book(tmp_path, store, pub)
    hooks = CallHooks(CallKeys(config.build({}, {}, tmp_path), b), TlsLegs(FakeConfigSource(PJSIP)))
    dev = await store.add_device("Alice", "15550001111", None, "kid-9", "test")
    extras = await hooks.before_legs("call-9", dev.id, ["PJSIP/1555@carrier-tls", "PJSIP/1555@carrier"])
    [row] = await store.get_call_keys("call-9")
    assert extras.call_key_id == row.id
    assert set(extras.variables) == {"PJSIP/1555@carrier-tls"}  # the UDP leg gets nothing
    (value,) = extras.variables["PJSIP/1555@carrier-tls"].values()
    assert value == call_key_header_value(open_row(row, priv))  # the header carries the escrowed key
    assert value not in repr(extras)


async def test_call_hooks_without_escrow_key_give_no_key(store: Store, tmp_path: Path) -> None:
    c = config.build({}, {}, tmp_path)
    hooks = CallHooks(CallKeys(c, CallBook(c, store)), TlsLegs(FakeConfigSource(PJSIP)))
    extras = await hooks.before_legs("call-10", 0, ["PJSIP/1555@carrier-tls"])
    assert extras.call_key_id is None and not extras.variables

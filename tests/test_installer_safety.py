"""M1: `asterisk install` writes Asterisk's config dir, which belongs to the asterisk user, as root. It used to create
securelink/ and then chmod/chown it by path: that user swapped the new folder for a link and got any root file. Now
every folder is opened once without following a link and written through its descriptor; a folder another user may
write, or a link where a folder is expected, is refused with nothing changed."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterisk_securelink import config as config_mod
from asterisk_securelink.installer import apply as applier
from asterisk_securelink.installer.plan import Plan, Refused, Secrets, Settings, plan_install

STOCK = Path(__file__).parent / "data" / "asterisk-stock"
NOBODY = 65534  # Asterisk's user here: the attacker, owning the config dir as Debian's asterisk user does
RUNS = 50
# The asterisk user's side, in a process of its own: whenever securelink/ is a real folder, move it away and put a
# link to the victim in its place, as fast as it can, until told to stop. Prints how many swaps it made.
SWAPPER = """
import os, stat, sys
etc, victim, stop = sys.argv[1:4]
sub = os.path.join(etc, "securelink")
swaps = 0
while not os.path.exists(stop):
    try:
        if stat.S_ISDIR(os.lstat(sub).st_mode):
            os.rename(sub, f"{sub}.moved-{swaps}")
            os.symlink(victim, sub)
            swaps += 1
    except OSError:
        pass
print(swaps)
"""


@pytest.fixture
def top() -> Iterator[Path]:
    """A folder the unprivileged user may walk into (pytest's tmp_path is root's 0700)."""
    path = Path(tempfile.mkdtemp(prefix="securelink-m1-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_etc(top: Path, owner: int = 0, runuser: str | None = None) -> Path:
    etc = top / "etc" / "asterisk"
    shutil.copytree(STOCK, etc, ignore=shutil.ignore_patterns("README.md"))
    for p in [etc.parent, *etc.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o640)
    etc.chmod(0o755)
    if runuser is not None:
        conf = etc / "asterisk.conf"
        conf.write_text(conf.read_text().replace(";runuser = asterisk", f"runuser = {runuser}"))
    os.chown(etc, owner, owner)
    return etc


def make_toml(top: Path) -> Path:
    path = top / "securelink.toml"
    path.write_text(config_mod.SKELETON)
    path.chmod(0o600)
    return path


def plan(etc: Path, toml: Path) -> Plan:
    settings = Settings("securelink", "securelink", "securelink", 8088, toml, toml.read_text(), applier.owner_of(toml))
    return plan_install(applier.scan(etc), settings, Secrets("a" * 64, "b" * 64, "t" * 64), (22, 10))


def install(etc: Path, toml: Path, backups: Path) -> None:
    p = plan(etc, toml)
    applier.preflight(p)
    applier.apply(p, backups)


def files(root: Path) -> dict[str, tuple[bytes | None, int, int]]:
    """Every entry under `root`, not following links: bytes (None: a folder; the target: a link), mode, owner."""
    out: dict[str, tuple[bytes | None, int, int]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        data = os.readlink(p).encode() if p.is_symlink() else None if p.is_dir() else p.read_bytes()
        out[p.relative_to(root).as_posix()] = (data, stat.S_IMODE(st.st_mode), st.st_uid)
    return out


def test_swapping_securelink_for_a_link_never_hands_the_asterisk_user_a_root_file(top: Path) -> None:
    etc = make_etc(top, owner=NOBODY, runuser="nobody")
    toml = make_toml(top)
    victim = top / "victim"  # root's, 0600: /etc/shadow, say
    victim.write_bytes(b"root's secret\n")
    victim.chmod(0o600)
    pristine = {p.name: p.read_bytes() for p in etc.iterdir() if p.is_file() and not p.is_symlink()}
    toml_text = toml.read_bytes()
    stop = top / "stop"
    swapper = subprocess.Popen(
        ["/usr/bin/python3", "-c", SWAPPER, str(etc), str(victim), str(stop)],
        user=NOBODY, group=NOBODY, extra_groups=[], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    outcomes: list[str] = []
    try:
        time.sleep(0.2)  # the swapper is running
        for run in range(RUNS):
            try:
                install(etc, toml, top / "backups")
                outcomes.append("done")
            except Refused as exc:
                outcomes.append(f"refused: {exc}")
            except Exception as exc:  # noqa: BLE001 - counted, the test fails below
                outcomes.append(f"crashed: {exc!r}")
            pause(swapper.pid)  # the folder holds still while it is looked at and put back
            st = victim.stat()
            tally = Counter(o.partition(":")[0] for o in outcomes)
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600), (
                f"run {run + 1}: the victim is now uid {st.st_uid} mode {stat.S_IMODE(st.st_mode):04o}; {tally}"
            )
            assert victim.read_bytes() == b"root's secret\n"
            _check_and_reset(etc, toml, pristine, toml_text, outcomes[-1])
            os.kill(swapper.pid, signal.SIGCONT)
    finally:
        os.kill(swapper.pid, signal.SIGCONT)
        stop.touch()
        out, _ = swapper.communicate(timeout=30)
    swaps = int(out)
    assert swaps > 0, "the swapper never saw securelink/: the race was not run"
    assert [o for o in outcomes if o.startswith("crashed")] == []
    print(f"{RUNS} runs, {swaps} swaps: {tally['done']} done, {tally['refused']} refused")


def pause(pid: int) -> None:
    """SIGSTOP `pid` and wait until it is stopped."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "T":
        assert time.monotonic() < deadline, "the swapper did not stop"
        time.sleep(0.001)


def _check_and_reset(etc: Path, toml: Path, pristine: dict[str, bytes], toml_text: bytes, outcome: str) -> None:
    """A run that completed wrote every file, with its mode, wherever the swapper moved the folder; a refused one
    said why in one line and changed nothing. Then back to the stock configuration for the next run."""
    ours = [d for d in etc.parent.glob("asterisk/securelink*") if d.is_dir() and not d.is_symlink()]
    if outcome.startswith("crashed"):
        pass  # the old code: reported at the end
    elif outcome == "done":
        assert all(b"#tryinclude securelink/" in (etc / n).read_bytes() for n in ("ari.conf", "manager.conf"))
        [folder] = [d for d in ours if (d / "ari.conf").exists()]
        assert stat.S_IMODE(folder.lstat().st_mode) == 0o755 and folder.lstat().st_uid == NOBODY
        for name in ("ari.conf", "manager.conf", "securelink.conf"):
            assert stat.S_IMODE((folder / name).lstat().st_mode) == 0o640 and (folder / name).is_file()
    else:
        assert "\n" not in outcome and ("symbolic link" in outcome or "replaced while install ran" in outcome), outcome
        assert {p.name: p.read_bytes() for p in etc.iterdir() if p.is_file() and not p.is_symlink()} == pristine
        assert toml.read_bytes() == toml_text
        assert not any((d / "ari.conf").exists() for d in ours)
    for entry in etc.glob("securelink*"):
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink()
        else:
            shutil.rmtree(entry)
    for name, data in pristine.items():
        (etc / name).write_bytes(data)
    toml.write_bytes(toml_text)


# -- refusals: nothing changed -------------------------------------------------------------------------------
def _refuses(etc: Path, toml: Path, top: Path, match: str) -> None:
    before = files(top)
    with pytest.raises(Refused, match=match) as refused:
        install(etc, toml, top / "backups")
    assert "\n" not in str(refused.value)
    assert files(top) == before


@pytest.mark.parametrize(("mode", "who"), [(0o775, "its group"), (0o757, "everyone"), (0o777, "everyone")])
def test_a_config_dir_or_securelink_folder_others_may_write_is_refused(top: Path, mode: int, who: str) -> None:
    etc = make_etc(top)
    toml = make_toml(top)
    etc.chmod(mode)
    _refuses(etc, toml, top, rf"{etc} may be written by {who} \(mode 0{mode:o}\): `chmod go-w {etc}` first")
    etc.chmod(0o755)
    (etc / "securelink").mkdir(mode=0o755)
    (etc / "securelink").chmod(mode)
    _refuses(etc, toml, top, rf"{etc}/securelink may be written by {who}")


def test_a_config_dir_owned_by_anyone_but_root_or_asterisks_user_is_refused(top: Path) -> None:
    etc = make_etc(top, owner=NOBODY)  # asterisk.conf names no runuser, and this host has no `asterisk` user
    toml = make_toml(top)
    _refuses(etc, toml, top, rf"{etc} belongs to nobody \(uid 65534\), neither root nor Asterisk's user")
    os.chown(etc, 0, 0)
    (etc / "securelink").mkdir(mode=0o755)
    os.chown(etc / "securelink", NOBODY, NOBODY)
    _refuses(etc, toml, top, rf"{etc}/securelink belongs to nobody \(uid 65534\)")
    conf = etc / "asterisk.conf"
    conf.write_text(conf.read_text().replace(";runuser = asterisk", "runuser = nobody"))  # Asterisk runs as nobody
    install(etc, toml, top / "backups")
    assert (etc / "securelink/ari.conf").is_file()


def test_a_link_where_securelink_or_an_edited_file_should_be_is_refused(top: Path) -> None:
    etc = make_etc(top)
    toml = make_toml(top)
    elsewhere = top / "elsewhere"
    elsewhere.mkdir()
    (etc / "securelink").symlink_to(elsewhere)
    _refuses(etc, toml, top, rf"{etc}/securelink is a symbolic link where a folder is expected: remove it first")
    (etc / "securelink").unlink()
    (etc / "securelink").write_text("")
    _refuses(etc, toml, top, rf"{etc}/securelink is a file where a folder is expected")
    (etc / "securelink").unlink()
    real = top / "ari.conf"
    (etc / "ari.conf").rename(real)
    (etc / "ari.conf").symlink_to(real)
    _refuses(etc, toml, top, rf"{etc}/ari.conf is a symbolic link: install edits regular files only")


def test_a_swap_between_plan_and_write_is_refused_and_the_target_untouched(top: Path) -> None:
    etc = make_etc(top)
    toml = make_toml(top)
    (etc / "securelink").mkdir(mode=0o755)
    p = plan(etc, toml)  # securelink/ exists: the plan writes into it
    victim = top / "victim"
    victim.mkdir(mode=0o700)
    (etc / "securelink").rmdir()
    (etc / "securelink").symlink_to(victim)
    before = files(top)
    with pytest.raises(Refused, match="is a symbolic link where a folder is expected"):
        applier.apply(p, top / "backups")
    assert files(top) == before and list(victim.iterdir()) == []
    (etc / "securelink").unlink()
    p = plan(etc, toml)  # no securelink/: the plan makes it
    etc.chmod(0o777)  # opened up after the plan was made
    with pytest.raises(Refused, match="may be written by everyone"):
        applier.apply(p, top / "backups")
    assert not (etc / "securelink").exists()


def test_a_plan_that_makes_securelink_refuses_one_made_meanwhile(top: Path) -> None:
    etc = make_etc(top)
    toml = make_toml(top)
    p = plan(etc, toml)
    (etc / "securelink").mkdir(mode=0o755)
    with pytest.raises(Refused, match="was made while the plan was made"):
        applier.apply(p, top / "backups")
    assert list((etc / "securelink").iterdir()) == []
    assert dataclasses.replace(p, make_dir=None) != p  # the plan did mean to make it

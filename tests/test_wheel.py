"""The package as a user installs it: a wheel built from this tree, in a fresh virtualenv outside the checkout.

An editable install hides packaging bugs (a plain `pip install` once shipped without its migrations), so this test
builds the wheel, installs it with its dependencies into a new venv, and runs `securelink init`, `db upgrade` and the
doctor's database check from a folder that has nothing of the checkout in it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_LEFTOVERS = (".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", ".demo", ".venv")

pytestmark = pytest.mark.packaging


def run(*args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURELINK_", "PYTHON", "VIRTUAL_ENV"))}
    p = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return p


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    # build from a copy: a `build/` folder left in the tree by an earlier build would be reused by setuptools
    src = work / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS))
    built = run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, src, cwd=work)
    assert built.returncode == 0, built.stderr[-3000:]
    wheels = list(dist.glob("asterisk_securelink-*.whl"))
    assert len(wheels) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    for shipped in (
        "asterisk_securelink/store/alembic/env.py",
        "asterisk_securelink/store/alembic/script.py.mako",
        "asterisk_securelink/store/alembic/versions/0001_initial_schema.py",
        "asterisk_securelink/installer/dialplan/securelink.conf",
        "asterisk_securelink/installer/systemd/securelink.service",
    ):
        assert shipped in names, f"the wheel lacks {shipped}"
    assert not any(n.startswith(("tests/", "alembic/", "bench/")) for n in names)
    env = work / "venv"
    made = run(sys.executable, "-m", "venv", env, cwd=work)
    assert made.returncode == 0, made.stderr
    installed = run(env / "bin" / "python", "-m", "pip", "install", "-q", wheels[0], cwd=work)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return env


def test_the_wheel_is_what_runs(venv: Path, tmp_path: Path) -> None:
    p = run(
        venv / "bin" / "python", "-c", "import asterisk_securelink; print(asterisk_securelink.__file__)", cwd=tmp_path
    )
    assert p.returncode == 0, p.stderr
    assert Path(p.stdout.strip()).is_relative_to(venv), p.stdout
    assert not Path(p.stdout.strip()).is_relative_to(ROOT)


def test_init_upgrade_and_doctor_database_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    securelink = venv / "bin" / "securelink"
    conf = tmp_path / "etc" / "securelink.toml"
    state = tmp_path / "state"
    p = run(securelink, "--config", conf, "init", "--state-dir", state, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "database migrated to the latest schema" in p.stdout
    db = state / "securelink.sqlite3"
    assert db.is_file() and stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600  # it will hold the ARI and AMI secrets
    assert stat.S_IMODE(state.stat().st_mode) == 0o700

    p = run(securelink, "--config", conf, "db", "upgrade", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["revision"]

    p = run(securelink, "--config", conf, "doctor", "--json", cwd=tmp_path, timeout=120)
    checks = {c["check"]: c for c in json.loads(p.stdout)}
    assert checks["database"]["ok"], checks["database"]
    assert checks["master key"]["ok"], checks["master key"]

    p = run(securelink, "--config", conf, "device", "add", "Alice", "--number", "+15550100001", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["provisioning_uri"].startswith("securelink://provision?")


def test_errors_from_the_wheel_carry_their_message(venv: Path, tmp_path: Path) -> None:
    p = run(venv / "bin" / "securelink", "device", "list", cwd=tmp_path)  # no config anywhere
    assert p.returncode == 2
    assert "no config file" in p.stderr and "--config" in p.stderr
    assert "Error\n" not in p.stderr and len(p.stderr.strip().splitlines()) == 1

"""Every error class the package defines has one root, `SecureLinkError`, and keeps the builtin base callers catch."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil

import pytest

import asterisk_securelink
from asterisk_securelink import errors
from asterisk_securelink.asterisk.agi import AgiHangup
from asterisk_securelink.asterisk.ami import AmiTimeout
from asterisk_securelink.asterisk.ari.errors import AriError
from asterisk_securelink.callkeys.escrow import EscrowError
from asterisk_securelink.callkeys.vouchers import VoucherError
from asterisk_securelink.config import ConfigError
from asterisk_securelink.core.formats import FormatError
from asterisk_securelink.core.provisioning import ProvisioningError
from asterisk_securelink.core.slk1 import SLK1Error
from asterisk_securelink.device.api_client import TlsFailed
from asterisk_securelink.deviceapi.codes import CodeError
from asterisk_securelink.deviceapi.signing import Unauthorized
from asterisk_securelink.keyfile import UnwritableDirectoryError
from asterisk_securelink.masterkey import MasterKeyError
from asterisk_securelink.store.store import DuplicateError, StoreError


def _package_exceptions() -> list[type[BaseException]]:
    """Every exception class defined (not merely imported) in a module of the package. `__main__` modules run a
    command when imported, so they are parsed, not imported: they must define no class at all."""
    found: list[type[BaseException]] = []
    for info in pkgutil.walk_packages(asterisk_securelink.__path__, asterisk_securelink.__name__ + "."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            spec = importlib.util.find_spec(info.name)
            assert spec is not None and spec.origin is not None
            with open(spec.origin, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            assert not any(isinstance(node, ast.ClassDef) for node in ast.walk(tree)), info.name
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                found.append(value)
    return found


def test_every_package_exception_derives_from_the_root() -> None:
    classes = _package_exceptions()
    assert len(classes) >= 40  # the walk reached the whole package (44 classes when this test was written)
    assert errors.SecureLinkError in classes
    strays = [f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, errors.SecureLinkError)]
    assert strays == []


@pytest.mark.parametrize(
    ("cls", "kind"),
    [
        (ConfigError, errors.InputError),
        (FormatError, errors.InputError),
        (SLK1Error, errors.InputError),
        (ProvisioningError, errors.InputError),
        (CodeError, errors.InputError),
        (MasterKeyError, errors.KeyFileError),
        (EscrowError, errors.KeyFileError),
        (UnwritableDirectoryError, errors.KeyFileError),
        (AriError, errors.ProtocolError),
        (AmiTimeout, errors.ProtocolError),
        (AgiHangup, errors.ProtocolError),
        (TlsFailed, errors.ProtocolError),
        (Unauthorized, errors.VerificationError),
        (VoucherError, errors.VerificationError),
    ],
)
def test_each_error_is_of_its_kind(cls: type[Exception], kind: type[Exception]) -> None:
    assert issubclass(cls, kind)


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (ConfigError, ValueError),
        (FormatError, ValueError),
        (SLK1Error, ValueError),
        (ProvisioningError, ValueError),
        (CodeError, ValueError),
        (MasterKeyError, ValueError),
        (EscrowError, ValueError),
        (VoucherError, ValueError),
        (UnwritableDirectoryError, OSError),
        (StoreError, RuntimeError),
        (DuplicateError, RuntimeError),
        (errors.StartupError, RuntimeError),
    ],
)
def test_the_builtin_bases_callers_catch_are_kept(cls: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(cls, builtin)


def test_an_oserror_with_a_root_still_carries_errno_and_filename() -> None:
    exc = UnwritableDirectoryError(13, "Permission denied", "/etc/securelink")
    assert (exc.errno, exc.strerror, exc.filename) == (13, "Permission denied", "/etc/securelink")
    assert isinstance(exc, errors.SecureLinkError)


def test_the_errors_module_imports_nothing_from_the_package() -> None:
    spec = importlib.util.find_spec("asterisk_securelink.errors")
    assert spec is not None and spec.origin is not None
    with open(spec.origin, encoding="utf-8") as f:
        source = f.read()
    assert "import asterisk_securelink" not in source
    assert "from asterisk_securelink" not in source
    assert "from ." not in source

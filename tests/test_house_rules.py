"""The rules of the test suite's house, checked on its source: a test file imports shared helpers from tests/support,
never from another test file (a test module is not a library: renaming or deleting a test must not break another),
and a `VerificationService` is built in one place only (support/services.py, through `app.verifier`), so a
constructor change is one edit.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
FACTORY = TESTS / "support" / "services.py"


def sources() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import in `tree`, at any depth (an import inside a function counts too)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or ""))
            if node.level or not node.module:  # `from . import test_x`
                found += [(node.lineno, alias.name) for alias in node.names]
    return found


def test_imports_of_test_modules_are_found() -> None:
    tree = ast.parse("import os\nfrom test_a import x\ndef f():\n    import pkg.test_b\n    from . import test_c\n")
    assert [m for _, m in imported_modules(tree)] == ["os", "test_a", "pkg.test_b", "", "test_c"]


def test_no_test_file_imports_another_test_file() -> None:
    offences = [
        f"{path.relative_to(TESTS)}:{line}: imports {module}"
        for path in sources()
        for line, module in imported_modules(ast.parse(path.read_text(), str(path)))
        if any(part.startswith("test_") for part in module.split("."))
    ]
    assert offences == [], "move the shared helper into tests/support:\n" + "\n".join(offences)


def test_verification_service_is_built_only_by_the_factory() -> None:
    builders = [
        f"{path.relative_to(TESTS)}:{node.lineno}"
        for path in sources()
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call)
        and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) in {"VerificationService", "verifier"}
        and path != FACTORY
    ]
    assert builders == [], "build it with support.services.make_service:\n" + "\n".join(builders)
    assert "verifier(" in FACTORY.read_text()  # the app's own builder (app.verifier), as production builds it

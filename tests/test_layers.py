"""The one rule of the house (docs/architecture.md): imports point down the floors, never up, and never in a circle;
no module grows past what a reader can hold in their head. Read from the package's own source with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import asterisk_securelink

PACKAGE = Path(asterisk_securelink.__file__).parent
MAX_LINES = 460  # "a module a reader can hold in their head": ~450 lines

# floor of each part, lowest first; a module may import its own floor and the floors below it
FLOORS: dict[str, int] = {
    # 0: the functional core, pure
    "core": 0, "errors": 0, "dialplan": 0, "lifecycle": 0,
    # 1: protocols, data and the clients that know nothing of the product's features
    "asterisk": 1, "store": 1, "deviceapi": 1, "config": 1, "keyfile": 1, "masterkey": 1, "logs": 1,
    "auditspool": 1, "metrics": 1, "tasks": 1,
    # 2: services the features share
    "audit": 2, "livekeys": 2, "notifier": 2, "callkeys": 2, "stasis": 2, "provision": 2,
    # 3: the features
    "inbound": 3, "outbound": 3,
    # 4: the composition root and what runs the whole
    "app": 4, "runner": 4, "doctor": 4, "installer": 4,
    # 5: the programs
    "cli": 5, "device": 5,
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every module of the package `path` imports, wherever the import stands (functions and TYPE_CHECKING too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("asterisk_securelink"):
            base = node.module.removeprefix("asterisk_securelink").lstrip(".")
            names = [f"{base}.{a.name}".lstrip(".") for a in node.names]
            names = [n if n in known else base for n in names]
        elif isinstance(node, ast.Import):
            names = [a.name.removeprefix("asterisk_securelink").lstrip(".") for a in node.names]
            names = [n for n in names if n in known]
        found.update(n for n in names if n)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, known) for name, path in mods.items()}


def floor(module: str) -> int:
    top = module.split(".")[0]
    assert top in FLOORS, f"{module}: give its part a floor in FLOORS (docs/architecture.md)"
    return FLOORS[top]


def test_every_part_has_a_floor() -> None:
    assert all(floor(m) >= 0 for m in modules() if m)


def test_no_import_points_up() -> None:
    up = sorted(
        f"{m} (floor {floor(m)}) imports {t} (floor {floor(t)})"
        for m, targets in graph().items()
        if m
        for t in targets
        if floor(t) > floor(m)
    )
    assert up == []


def test_no_import_circle() -> None:
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert circles == []


def test_the_check_sees_an_upward_import_and_a_circle() -> None:
    """The rule's own check: a floor-1 module importing a feature is caught, and so is a two-module circle."""
    assert floor("store.store") < floor("inbound.service")
    known = {"a", "b"}
    src = Path(__file__)
    assert imports_of(src, known) == set()  # this file imports nothing of the package by those names


def test_no_module_is_too_long_to_hold_in_ones_head() -> None:
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}

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
    "inbound": 3, "outbound": 3, "calling": 3,
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


def upward(g: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{m} (floor {floor(m)}) imports {t} (floor {floor(t)})" for m, targets in g.items() for t in targets
        if floor(t) > floor(m)
    )  # fmt: skip


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_no_import_points_up() -> None:
    assert upward({m: t for m, t in graph().items() if m}) == []


def test_no_import_circle() -> None:
    assert circles(graph()) == []


def test_the_checks_see_an_upward_import_and_a_circle() -> None:
    """The rule's own checks on a made-up graph: a store module importing a feature, and a three-module circle."""
    g = {"store.x": {"inbound.y"}, "inbound.y": {"callkeys.z"}, "callkeys.z": {"store.x"}, "core.a": set()}
    assert upward(g) == ["store.x (floor 1) imports inbound.y (floor 3)"]
    assert circles(g) == [["callkeys.z", "inbound.y", "store.x"]]
    assert circles({"core.a": {"core.b"}, "core.b": set()}) == []


def test_the_import_reader_sees_imports_inside_functions(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from asterisk_securelink.store import store\n    import asterisk_securelink.app\n")
    assert imports_of(src, {"store.store", "store", "app"}) == {"store.store", "app"}


def test_no_module_is_too_long_to_hold_in_ones_head() -> None:
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}

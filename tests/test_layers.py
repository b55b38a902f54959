"""The package's floors hold: the serving runtime is closed, imports only run downward, no circles.

Read from the source with ``ast`` (every import counts, those inside functions and under
TYPE_CHECKING too: a lazy import is still a dependency), so a module added to the runtime
that reaches outside it fails here, before a built bento fails to start.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
#: Floors from the bottom; a module may import its own floor and the floors below it.
FLOORS = ["serving", "", "store", "learning", "jobs", "api", "ops", "cli"]
ROOT_MODULES = {"settings", "errors", "filelock", "progress"}  # the floor named ""


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py") if "migrations" not in p.parts}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Our modules that ``path`` imports (``from a import b`` counts b when b is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        found.update(t for t in targets if t in known and t != name)
    # ``import training.x.y`` also names its parents; a package's own __init__ is no import.
    return {t for t in found if not name.startswith(t + ".") and t != "training"}


def floor_of(name: str) -> int:
    if name == "service":
        return 0  # src/service.py belongs to the runtime: the bento carries it with it
    parts = name.split(".")
    if len(parts) == 1:
        return FLOORS.index("")  # the package's own __init__
    if parts[1] in ROOT_MODULES or parts[1] == "__main__":
        return FLOORS.index("") if parts[1] != "__main__" else len(FLOORS)
    return FLOORS.index(parts[1])


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = our_modules()
    return {name: imports_of(path, name, set(modules)) for name, path in modules.items()}


def test_the_serving_runtime_imports_nothing_else_of_ours(graph: dict[str, set[str]]) -> None:
    runtime = [n for n in graph if n == "service" or n.startswith("training.serving")]
    assert "training.serving.keys" in runtime and "service" in runtime
    outside = {
        name: sorted(t for t in targets if not t.startswith("training.serving"))
        for name, targets in graph.items()
        if name in runtime
    }
    assert {name: found for name, found in outside.items() if found} == {}


def test_every_import_runs_down_the_floors(graph: dict[str, set[str]]) -> None:
    upward = [
        f"{name} -> {target}"
        for name, targets in graph.items()
        for target in targets
        if floor_of(target) > floor_of(name)
    ]
    assert upward == []


def test_no_import_circles(graph: dict[str, set[str]]) -> None:
    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), list(graph[start])
        while stack:
            current = stack.pop()
            if current == goal:
                return True
            if current not in seen:
                seen.add(current)
                stack.extend(graph.get(current, ()))
        return False

    circles = sorted(
        f"{a} <-> {b}" for a, targets in graph.items() for b in targets if a < b and reaches(b, a)
    )
    assert circles == []


def test_the_checker_sees_a_reach_outside_the_runtime(tmp_path: Path) -> None:
    """The rule above would pass vacuously if imports were not read: show that they are."""
    module = tmp_path / "training" / "serving" / "leaky.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "def f():\n    from training.store.runs import RunStore\n    return RunStore\n"
    )
    found = imports_of(module, "training.serving.leaky", {"training.store.runs"})
    assert found == {"training.store.runs"}

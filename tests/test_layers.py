"""The package's import graph: packages import downward only, leaves import no other part of bioray,
and no module imports itself back through others (function-level imports count too). Read from the
source with its own small scanner, independent of bioray's code-key closure."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bioray"
# lowest first; a unit may import its own modules and units of a lower level only
LEVELS = {
    # leaves: import nothing of bioray
    "bioray": 0, "bioray.constants": 0, "bioray.metric_names": 0, "bioray.workdir": 0, "bioray.progress": 0,
    "bioray.storage": 0,
    "bioray.config": 1, "bioray.tracking": 1, "bioray.corpus": 1, "bioray.plots": 1,  # leaves beside each other
    "bioray.data": 2, "bioray.model": 3, "bioray.train": 4, "bioray.tasks": 5, "bioray.pipeline": 6,
    "bioray.bench": 7, "bioray.cli": 8,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules of bioray this file imports anywhere (`from a import b` counts a.b when b is a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return {t for t in targets if t in known and t != module}


def _unit(module: str) -> str:
    return max((u for u in LEVELS if module == u or module.startswith(u + ".")), key=len)


def test_every_module_belongs_to_a_layer():
    assert all(_unit(m) for m in _modules())


def test_packages_import_downward_only():
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        unit = _unit(module)
        for target in _imports(module, path, set(modules)):
            other = _unit(target)
            if other != unit and LEVELS[other] >= LEVELS[unit]:
                wrong.append(f"{module} imports {target} ({unit} is not above {other})")
    assert wrong == []


def test_no_import_cycles():
    modules = _modules()
    graph = {m: _imports(m, p, set(modules)) for m, p in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_scanner_sees_function_level_and_relative_imports(tmp_path):
    source = tmp_path / "bioray" / "tasks" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text("def f():\n    from bioray.pipeline import runner\n    from . import ner\n")
    found = _imports("bioray.tasks.x", source, {"bioray.pipeline.runner", "bioray.tasks.ner", "bioray.pipeline"})
    assert found == {"bioray.pipeline.runner", "bioray.tasks.ner"}

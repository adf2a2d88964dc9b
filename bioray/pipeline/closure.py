"""The code part of a stage's key: a hash of every bioray module the stage can run, found by following
its imports (module level and inside functions) through the package's source, without importing it; a
root outside bioray (a workflow's plugin) counts with the modules of its own package it imports.

Nothing is listed by hand: a module a stage reaches only indirectly (the encoder's attention kernel
under pretraining) is in its closure, so editing it makes the stage's cached outputs stale.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
from pathlib import Path

PACKAGE = "bioray"
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the bioray package


def module_file(module: str, root: Path = SOURCE_ROOT) -> Path | None:
    """The source file of a module (a package's __init__.py), or None if there is none; bioray's are
    read under `root`, a plugin's where Python finds it."""
    if module.partition(".")[0] != PACKAGE:
        spec = importlib.util.find_spec(module)
        return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, module: str) -> set[str]:
    """The bioray modules (and those of its own package) one source file imports, wherever the import
    statement is."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from ..y import z
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
    packages = {PACKAGE, module.partition(".")[0]}
    return {name for name in found if name.partition(".")[0] in packages}


def closure(roots: tuple[str, ...], root: Path = SOURCE_ROOT) -> list[str]:
    """Every bioray module reachable from the root modules through imports, parents included (importing
    a.b.c runs a/__init__.py and a/b/__init__.py), sorted."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        module = stack.pop()
        if module in seen:
            continue
        path = module_file(module, root)
        if path is None:  # `from pkg import name` where name is not a module
            continue
        seen.add(module)
        parents = [module.rsplit(".", depth)[0] for depth in range(1, module.count(".") + 1)]
        stack.extend(parents)
        stack.extend(imported_modules(path, module) - seen)
    return sorted(seen)


def code_digest(roots: tuple[str, ...], root: Path = SOURCE_ROOT) -> str:
    """A hash of the sources of the modules in the closure of `roots` (names and contents), read from
    the package under `root` (this installation's, cached: its code does not change while it runs; a
    plugin's root module may be edited meanwhile, so its source is part of the cache key)."""
    if root != SOURCE_ROOT:
        return _digest(roots, root)
    plugins = tuple(path.read_bytes() for m in roots if m.partition(".")[0] != PACKAGE and (path := module_file(m)))
    return _installed_digest(roots, plugins)


@functools.cache
def _installed_digest(roots: tuple[str, ...], plugin_sources: tuple[bytes, ...]) -> str:
    return _digest(roots, SOURCE_ROOT)


def _digest(roots: tuple[str, ...], root: Path) -> str:
    digest = hashlib.sha256()
    for module in closure(roots, root):
        digest.update(module.encode() + b"\0" + module_file(module, root).read_bytes())
    return digest.hexdigest()[:16]

"""`bioray gc`: what the stage outputs of a workdir hold that none of the given workflows references
any more — outputs of other keys of their stages (an older config or code), of stages they no longer
have, and the half-written directories, resume data and state files of runs that are over. Listed
first; removed only when asked. A stage that a live driver runs keeps everything it has."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from bioray.config import WorkflowConfig
from bioray.pipeline import stage_state
from bioray.pipeline.plan import build_plan, compute_keys
from bioray.workdir import Workdir, disk_size

# what a run leaves beside a stage's outputs, and in <workdir>/runs/, each named by the stage key it belongs to
_BESIDE = re.compile(r"^\.(tmp|scratch)-([0-9a-f]{16})")
_BOOKKEEPING = re.compile(r"^([0-9a-f]{16})\.(state|progress)\.")
_WHY = {"tmp": "half-written output of a run that is over", "scratch": "resume data of a stage no workflow has",
        "state": "state of a stage no workflow has", "progress": "progress lines of a run that is over"}


@dataclass(frozen=True)
class Garbage:
    path: Path
    bytes: int
    why: str


def find_garbage(configs: list[WorkflowConfig]) -> dict[Path, list[Garbage]]:
    """Per workdir, what no given workflow using it references (every workflow that shares a workdir
    should be given: what only the others reference would be listed)."""
    referenced: dict[Path, tuple[Workdir, set[tuple[str, str]]]] = {}
    for config in configs:
        nodes = build_plan(config)
        keys = compute_keys(nodes)
        paths, names = referenced.setdefault(config.paths.root, (config.paths, set()))
        names.update((node.name, keys[node.name]) for node in nodes)
    return {root: _unreferenced(paths, names) for root, (paths, names) in referenced.items()}


def _unreferenced(paths: Workdir, current: set[tuple[str, str]]) -> list[Garbage]:
    return _stage_outputs(paths, current) + _bookkeeping(paths, current)


def _live(paths: Workdir, name: str, key: str) -> bool:
    state = stage_state.read(paths, name, key)
    return state is not None and state["status"] == "running"


def _bookkeeping(paths: Workdir, current: set[tuple[str, str]]) -> list[Garbage]:
    found = []
    for path in sorted(paths.runs.rglob("*")):
        match = _BOOKKEEPING.match(path.name)
        if not (path.is_file() and match):
            continue
        key, kind = match.groups()
        name = path.parent.relative_to(paths.runs).as_posix()
        if _live(paths, name, key) or (kind == "state" and (name, key) in current):
            continue  # a live driver's stage, or what `status` says of a current one
        found.append(Garbage(path, path.stat().st_size, _WHY[kind]))
    return found


def _stage_outputs(paths: Workdir, current: set[tuple[str, str]]) -> list[Garbage]:
    stages = paths.stages
    found = []
    for directory, subdirectories, files in os.walk(stages):
        here = Path(directory)
        name = here.relative_to(stages).as_posix()
        for entry in sorted(subdirectories + files):
            path = here / entry
            beside = _BESIDE.match(entry)
            if beside:
                kind, key = beside.groups()
                if _live(paths, name, key) or (kind == "scratch" and (name, key) in current):
                    continue  # a live driver's stage, or a current stage's resume data
                found.append(Garbage(path, disk_size(path), _WHY[kind]))
            elif path.is_dir() and (path / "result.json").is_file():
                if (name, entry) not in current:
                    found.append(Garbage(path, disk_size(path), "an output no given workflow references"))
        subdirectories[:] = [d for d in subdirectories if not _BESIDE.match(d)
                             and not (here / d / "result.json").is_file()]  # outputs are not stage families
    return found

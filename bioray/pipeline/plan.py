"""The stage graph of a workflow and each stage's content-addressed key.

key = hash(stage name, the params its run reads, its inputs' keys, its raw files' fingerprints, the
code of its import closure). Keys are computed without Ray or MLflow (and without importing the
stages' heavy modules), so `bioray status` is instant and a run knows what is cached before it
starts anything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bioray.config import WorkflowConfig
from bioray.pipeline.closure import SOURCE_ROOT, code_digest
from bioray.pipeline.stage_kinds import STAGES
from bioray.pipeline.stages.base import Node


def build_plan(config: WorkflowConfig) -> list[Node]:
    """All nodes in topological order (each stage kind's after the kinds before it)."""
    nodes: list[Node] = []
    for stage in STAGES:
        nodes += stage.nodes(config, list(nodes))
    return nodes


def fingerprint(path: str) -> list:
    stat = Path(path).stat()
    return [path, stat.st_size, stat.st_mtime_ns]


def node_code(node: Node, source_root: Path = SOURCE_ROOT) -> str:
    """The hash of every bioray module the node's run can import (its stage's and its dataset's)."""
    return code_digest(tuple(node.stage.code_roots) + tuple(node.code), source_root)


def compute_keys(nodes: list[Node], source_root: Path = SOURCE_ROOT) -> dict[str, str]:
    """Each node's key; `source_root` is where the bioray package's source is read (another copy of it
    gives the keys that copy of the code would have)."""
    keys: dict[str, str] = {}
    for node in nodes:
        payload = {
            "name": node.name,
            "params": node.params_json(),
            "inputs": {name: keys[name] for name in node.inputs},
            "files": [fingerprint(p) for p in node.files],
            "code": node_code(node, source_root),
        }
        keys[node.name] = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return keys


def stage_dir(config: WorkflowConfig, name: str, key: str) -> Path:
    return config.paths.stage_dir(name, key)


def is_cached(config: WorkflowConfig, name: str, key: str) -> bool:
    """Committed outputs only: the directory appears by an atomic rename after the stage finished."""
    return (stage_dir(config, name, key) / "result.json").is_file()


def nodes_for(nodes: list[Node], stage: str | None) -> list[str]:
    """The target nodes of a CLI command: every node of a stage kind, or all of them."""
    return [n.name for n in nodes if stage is None or n.kind == stage]


def downstream(nodes: list[Node], names: set[str]) -> set[str]:
    """The named nodes and every node that reads one of them, directly or not (nodes in topological order)."""
    reached = set(names)
    for node in nodes:
        if any(name in reached for name in node.inputs):
            reached.add(node.name)
    return reached


def needed_nodes(nodes: list[Node], keys: dict[str, str], config: WorkflowConfig, targets: list[str],
                 forced: set[str] = frozenset()) -> list[Node]:
    """Targets plus every upstream node that must run because something downstream is not cached (or forced)."""
    by_name = {n.name: n for n in nodes}
    needed, stack = set(), list(targets)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        if name in forced or not is_cached(config, name, keys[name]):
            stack.extend(by_name[name].inputs)
    return [n for n in nodes if n.name in needed]

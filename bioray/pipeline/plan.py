"""The stage graph of a workflow and each stage's content-addressed key.

key = hash(stage name, the config that defines its output, its inputs' keys, its external input
files' fingerprints, the source code of its modules). Keys are computed without Ray or MLflow, so
`bioray status` is instant and a run knows what is cached before it starts anything.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bioray.config import WorkflowConfig, is_mlflow_uri
from bioray.corpus.files import list_source_files
from bioray.tasks.datasets import dataset_files

TASK_CODE = ["bioray.tasks.registry", "bioray.tasks.datasets", "bioray.tasks.metrics", "bioray.tasks.batching",
             "bioray.tasks.ner", "bioray.tasks.pubtator", "bioray.corpus.sentences", "bioray.tasks.classification",
             "bioray.tasks.qa"]
STAGE_CODE = {
    "ingest": ["bioray.data.ingest", "bioray.corpus.files", "bioray.corpus.readers", "bioray.corpus.medline",
               "bioray.corpus.pmc", "bioray.corpus.text", "bioray.corpus.sentences"],
    "vocab": ["bioray.data.vocab"],
    "tokenize": ["bioray.data.tokenize", "bioray.data.pack"],
    "pretrain": ["bioray.train.pretrain", "bioray.train.deepspeed", "bioray.train.optim", "bioray.model.encoder",
                 "bioray.data.masking"],
    "finetune": ["bioray.train.finetune", "bioray.train.optim", "bioray.pipeline.models", *TASK_CODE],
    "evaluate": ["bioray.tasks.evaluate", *TASK_CODE],
    "report": ["bioray.tasks.report"],
    "tag": ["bioray.tasks.tagging", "bioray.tasks.inference", "bioray.tasks.ner", "bioray.tasks.batching"],
    "register": ["bioray.pipeline.register", "bioray.pipeline.gate", "bioray.pipeline.models"],
}
STAGE_KINDS = list(STAGE_CODE)


@dataclass(frozen=True)
class Node:
    """One stage instance in the graph (fine-tuning has one per dataset and seed)."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    params: dict = field(hash=False)
    files: tuple[str, ...] = ()
    num_cpus: float = 0  # orchestration stages start Ray Data / Ray Train work and hold no CPU themselves
    dataset: str | None = None
    seed: int | None = None
    fold: int | None = None  # k-fold datasets: 0-based fold
    run: Callable | None = field(default=None, compare=False)  # None: the kind's run function


def build_plan(config: WorkflowConfig) -> list[Node]:
    """All nodes in topological order."""
    source_files = [str(p) for s in config.ingest.sources for p in list_source_files(config.data_path(s.path), s.format)]
    nodes = [
        Node("ingest", "ingest", (), config.ingest.model_dump(), tuple(source_files)),
        Node("vocab", "vocab", ("ingest",), config.vocab.model_dump(), _checkpoint_files(config, config.vocab.init_checkpoint), num_cpus=1),
        Node("tokenize", "tokenize", ("vocab", "ingest"), config.tokenize.model_dump()),
        Node("pretrain", "pretrain", ("tokenize", "vocab"), config.pretrain.model_dump(),
             _checkpoint_files(config, config.pretrain.init_checkpoint)),
    ]
    common = config.finetune.model_dump(exclude={"datasets", "seeds"})
    evaluations = []
    for dataset in config.finetune.datasets:
        files = tuple(str(p) for p in _expand(dataset_files(dataset, config.data_path)))
        folds = list(range(len(dataset.folds))) if dataset.folds else [None]
        for fold in folds:
            prefix = f"{dataset.name}/fold-{fold + 1}" if fold is not None else dataset.name
            for seed in config.finetune.seeds:
                tune, evaluation = f"finetune/{prefix}/seed-{seed}", f"evaluate/{prefix}/seed-{seed}"
                nodes.append(Node(tune, "finetune", ("pretrain",),
                                  {**common, "dataset": dataset.model_dump(), "seed": seed, "fold": fold}, files,
                                  dataset=dataset.name, seed=seed, fold=fold))
                nodes.append(Node(evaluation, "evaluate", (tune,),
                                  {**config.evaluate.model_dump(),
                                   "max_length": config.finetune.for_dataset(dataset).max_length}, files,
                                  num_cpus=1, dataset=dataset.name, seed=seed, fold=fold))
                evaluations.append(evaluation)
    datasets = {d.name: {"task": d.task, "benchmark": d.benchmark or d.name} for d in config.finetune.datasets}
    nodes.append(Node("report", "report", tuple(evaluations), {"datasets": datasets}))
    if config.tag.dataset:  # batch inference over the corpus with one fine-tuned NER model
        seed = config.tag.seed if config.tag.seed is not None else config.finetune.seeds[0]
        nodes.append(Node(f"tag/{config.tag.dataset}", "tag", (f"finetune/{config.tag.dataset}/seed-{seed}", "ingest"),
                          {**config.tag.model_dump(), "max_length": config.finetune.max_length}))
    nodes.append(Node("register", "register", ("pretrain", *evaluations, "report"), config.registry.model_dump()))
    return nodes


def _expand(paths: list[Path]) -> list[Path]:
    """Files, with every file under a folder entry (HoC's text/ and labels/)."""
    return [f for p in paths for f in (sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p])]


def _checkpoint_files(config: WorkflowConfig, checkpoint: str | None) -> tuple[str, ...]:
    if not checkpoint or is_mlflow_uri(checkpoint):  # resolved to a local copy when a run starts
        return ()
    return tuple(str(p) for p in sorted(config.data_path(checkpoint).rglob("*")) if p.is_file())


def fingerprint(path: str) -> list:
    stat = Path(path).stat()
    return [path, stat.st_size, stat.st_mtime_ns]


_code_cache: dict[str, str] = {}


def code_version(kind: str) -> str:
    """Hash of the source of the modules that implement a stage: editing them invalidates its outputs."""
    if kind not in _code_cache:
        digest = hashlib.sha256()
        for module in STAGE_CODE[kind]:
            digest.update(Path(importlib.util.find_spec(module).origin).read_bytes())  # no import needed
        _code_cache[kind] = digest.hexdigest()[:16]
    return _code_cache[kind]


def compute_keys(nodes: list[Node]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for node in nodes:
        payload = {
            "name": node.name,
            "params": node.params,
            "inputs": {name: keys[name] for name in node.inputs},
            "files": [fingerprint(p) for p in node.files],
            "code": code_version(node.kind),
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


def needed_nodes(nodes: list[Node], keys: dict[str, str], config: WorkflowConfig, targets: list[str]) -> list[Node]:
    """Targets plus every upstream node that must run because something downstream is not cached."""
    by_name = {n.name: n for n in nodes}
    needed, stack = set(), list(targets)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        if not is_cached(config, name, keys[name]):
            stack.extend(by_name[name].inputs)
    return [n for n in nodes if n.name in needed]

"""Small real workflows for tests, and a corpus workdir built once per session and copied.

Every test workflow here shares the ingest, vocab and tokenize sections of `small_workflow`, so
their stage keys are the same: a copy of the template's `stages/` is a cache hit for them, and a
test pays only for the stages it is about.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import yaml

NCBI = {"name": "ncbi-disease", "task": "ner", "train": "NCBI-disease/biobert/train.tsv",
        "dev": "NCBI-disease/biobert/devel.tsv", "test": "NCBI-disease/biobert/test.tsv"}
TINY_MODEL = {"layers": 2, "hidden": 64, "heads": 2, "intermediate": 128, "max_position": 128}
# the cheapest real pretraining: one worker, four steps (tests about pretraining set their own)
PRETRAIN = {"model": TINY_MODEL, "num_workers": 1, "steps": 4, "global_batch_size": 8, "micro_batch_size": 8,
            "lr": 1e-3, "warmup_steps": 1, "log_every": 2, "checkpoint_every": 4, "shuffle_buffer": 64}


def small_workflow(workdir: Path, data_root: Path, name: str = "small", **sections) -> dict:
    """600 real abstracts, a 2,000-piece vocabulary, 64-token sequences (and 128 for a long phase), a
    tiny BERT; `sections` replace or add top-level keys (pretrain, finetune, tracking, ...)."""
    tree = {
        "name": name, "workdir": str(workdir), "data_root": str(data_root),
        "tracking": {"uri": f"sqlite:///{workdir / 'mlflow.db'}", "experiment": name},
        "ingest": {"sources": [{"name": "abstracts", "format": "jsonl", "path": "corpus/medical-abstracts-tc",
                                "max_docs": 600}]},
        "vocab": {"size": 2000, "sample_docs": 600},
        "tokenize": {"seq_len": 64, "long_seq_len": 128, "batch_size": 100},
        "pretrain": PRETRAIN,
        "finetune": {"datasets": [NCBI], "epochs": 1},
    }
    tree.update(sections)
    return tree


def write_workflow(tree: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def copy_stages(template: Path, workdir: Path, stages: tuple[str, ...]) -> None:
    """Committed outputs of the template's stages into workdir (a real copy: tests may change theirs)."""
    for stage in stages:
        shutil.copytree(template / "stages" / stage, workdir / "stages" / stage)


@contextmanager
def mlflow_state_kept():
    """bioray's runner points this process's MLflow at a workflow's store (as the CLI needs): put the
    tracking settings back as they were, so nothing later talks to another test's (stopped) server."""
    from mlflow.tracking._tracking_service import utils

    saved_env, saved_uri = os.environ.get("MLFLOW_TRACKING_URI"), utils._tracking_uri
    try:
        yield
    finally:
        utils._tracking_uri = saved_uri
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


def run_in_process(workflow: Path, targets: list[str] | None = None, force: tuple[str, ...] = ()):
    """The runner in this process (on the session's Ray); returns the RunSummary."""
    from bioray.config import load_workflow
    from bioray.pipeline.runner import run_workflow

    with mlflow_state_kept():
        return run_workflow(load_workflow(workflow), targets, force=force)

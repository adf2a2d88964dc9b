"""Load: twenty fine-tuning stages queued at once on this two-core machine, through the CLI and a real
local Ray. Every one must complete, and no more may train at once than the cluster's CPUs hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.reliability.bioray_cli import run_bioray

SEEDS = list(range(20))
CPUS = 3  # Ray's logical CPUs on two cores: one is left to the data tasks, so two stages train at once


def _workflow(tmp_path: Path, data_root: Path) -> Path:
    tree = {
        "name": "load", "workdir": str(tmp_path / "work"), "data_root": str(data_root),
        "ray": {"num_cpus": CPUS}, "tracking": {"experiment": "load"},
        "ingest": {"sources": [{"name": "abstracts", "format": "jsonl", "path": "corpus/medical-abstracts-tc",
                                "max_docs": 300}]},
        "vocab": {"size": 1500, "sample_docs": 300},
        "tokenize": {"seq_len": 64},
        "pretrain": {"model": {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64, "max_position": 128},
                     "num_workers": 1, "steps": 4, "global_batch_size": 8, "micro_batch_size": 8, "warmup_steps": 1,
                     "log_every": 2, "checkpoint_every": 4},
        "finetune": {"datasets": [{"name": "ncbi-disease", "task": "ner", "train": "NCBI-disease/biobert/train.tsv",
                                   "dev": "NCBI-disease/biobert/devel.tsv", "test": "NCBI-disease/biobert/test.tsv",
                                   "max_train_examples": 64}],
                     "seeds": SEEDS, "epochs": 1, "batch_size": 16, "max_length": 64, "log_model": False},
    }
    path = tmp_path / "load.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


@pytest.mark.slow
def test_twenty_queued_fine_tuning_stages_all_complete_within_the_cpus(tmp_path, data_root):
    done = run_bioray("finetune", str(_workflow(tmp_path, data_root)), timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    client = MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("load").experiment_id], max_results=100)
    tuned = [r for r in runs if r.data.tags.get("bioray.stage", "").startswith("finetune/")]
    assert sorted(r.data.tags["bioray.stage"] for r in tuned) == sorted(
        f"finetune/ncbi-disease/seed-{s}" for s in SEEDS)
    assert all(r.info.status == "FINISHED" and r.data.tags.get("bioray.cache") == "miss" for r in tuned)
    assert all(r.data.metrics["finetune/train_loss"] == r.data.metrics["finetune/train_loss"] for r in tuned)
    results = list((tmp_path / "work" / "stages" / "finetune").glob("ncbi-disease/seed-*/*/result.json"))
    assert len(results) == len(SEEDS) and all((r.parent / "model").is_dir() for r in results)

    # at no moment did more stages train than the CPUs hold (one CPU each, one left over): each stage
    # ran from its commit time (result.json written last) back by its own measured duration
    intervals = [(r.stat().st_mtime - json.loads(r.read_text())["metrics"]["stage/seconds"], r.stat().st_mtime)
                 for r in results]
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running, most = 0, 0
    for _, change in events:
        running += change
        most = max(most, running)
    assert 1 < most <= CPUS - 1

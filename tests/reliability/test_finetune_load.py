"""Load: twenty fine-tuning stages queued at once on this two-core machine, through the CLI and a real
local Ray. Every one must complete, and no more may train at once than the cluster's CPUs hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.support.cli import run_bioray
from tests.support.workflows import NCBI, copy_stages, small_workflow, write_workflow

SEEDS = list(range(20))
CPUS = 3  # Ray's logical CPUs on two cores: one is left to the data tasks, so two stages train at once


def _workflow(tmp_path: Path, data_root: Path, template: Path) -> Path:
    """The session's workdir with everything up to pretraining committed; 20 tiny fine-tuning runs
    (no dev set: nothing but training is measured here)."""
    copy_stages(template, tmp_path / "work", ("ingest", "vocab", "tokenize", "pretrain"))
    dataset = {key: NCBI[key] for key in ("name", "task", "train", "test")}
    tree = small_workflow(tmp_path / "work", data_root, name="load", ray={"num_cpus": CPUS}, finetune={
        "datasets": [{**dataset, "max_train_examples": 32}], "seeds": SEEDS, "epochs": 1, "batch_size": 16,
        "max_length": 64, "log_model": False})
    return write_workflow(tree, tmp_path / "load.yaml")


@pytest.mark.extended
@pytest.mark.timeout(1500)
def test_twenty_queued_fine_tuning_stages_all_complete_within_the_cpus(tmp_path, data_root, pretrained_template):
    done = run_bioray("finetune", str(_workflow(tmp_path, data_root, pretrained_template)), timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    # all twenty were ready at once: as many started as the free CPUs hold, the rest queued in the runner
    assert f"{len(SEEDS) - (CPUS - 1)} training stage(s) waited for free CPUs" in done.stdout

    client = MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("load").experiment_id], max_results=100)
    tuned = [r for r in runs if r.data.tags.get("bioray.stage", "").startswith("finetune/")]
    assert sorted(r.data.tags["bioray.stage"] for r in tuned) == sorted(
        f"finetune/ncbi-disease/seed-{s}" for s in SEEDS)
    assert all(r.info.status == "FINISHED" and r.data.tags.get("bioray.cache") == "miss" for r in tuned)
    assert all(0 < r.data.metrics["finetune/train_loss"] < 10 for r in tuned)  # finite: each trained
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
    assert most <= CPUS - 1

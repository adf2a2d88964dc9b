"""Faults in a real pipeline run (CLI, local Ray, DeepSpeed on CPU): the MLflow server stopped for a
while during pretraining, and the driver killed mid-DAG and run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.integration.conftest import _free_port, _start_mlflow_server, _stop
from tests.reliability.bioray_cli import run_bioray, start_bioray

STEPS, LOG_EVERY, CHECKPOINT_EVERY = 40, 2, 10


def _workflow(tmp_path: Path, data_root: Path, tracking_uri: str | None) -> Path:
    """Ingest, vocab, tokenize and pretrain on 600 real abstracts, small enough for two cores."""
    tree = {
        "name": "faults", "workdir": str(tmp_path / "work"), "data_root": str(data_root),
        "tracking": {"uri": tracking_uri, "experiment": "faults"},
        "ingest": {"sources": [{"name": "abstracts", "format": "jsonl", "path": "corpus/medical-abstracts-tc",
                                "max_docs": 600}]},
        "vocab": {"size": 2000, "sample_docs": 600},
        "tokenize": {"seq_len": 64},
        "pretrain": {"model": {"layers": 2, "hidden": 64, "heads": 2, "intermediate": 128, "max_position": 128},
                     "num_workers": 2, "steps": STEPS, "global_batch_size": 16, "micro_batch_size": 8, "lr": 1e-3,
                     "warmup_steps": 4, "log_every": LOG_EVERY, "checkpoint_every": CHECKPOINT_EVERY,
                     "shuffle_buffer": 64},
        "finetune": {"datasets": [{"name": "ncbi-disease", "task": "ner", "train": "NCBI-disease/biobert/train.tsv",
                                   "dev": "NCBI-disease/biobert/devel.tsv", "test": "NCBI-disease/biobert/test.tsv"}]},
    }
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _start(workflow: Path) -> subprocess.Popen:
    """`bioray pretrain` (the stage and its inputs): driver and local Ray in one process group."""
    return start_bioray("pretrain", str(workflow))


def _wait_for(condition, what: str, process: subprocess.Popen, seconds: float = 600) -> None:
    deadline = time.time() + seconds
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended before {what}:\n{process.stdout.read()[-6000:]}")
        if time.time() > deadline:
            pytest.fail(f"no {what} after {seconds:.0f}s")
        time.sleep(1)


def _checkpoints(work: Path) -> list[Path]:
    return sorted((work / "ray_train").glob("pretrain-*/checkpoint_*"))


def _registered(work: Path) -> list[dict]:
    """Checkpoints Ray Train has registered (what a new run under the same name restores), from its snapshot."""
    for snapshot in (work / "ray_train").glob("pretrain-*/checkpoint_manager_snapshot.json"):
        try:
            return json.loads(snapshot.read_text())["checkpoint_results"]
        except ValueError:  # being rewritten
            return []
    return []


@pytest.mark.slow
def test_pretraining_goes_on_while_the_tracking_server_is_down(tmp_path, data_root):
    port = _free_port()
    server, uri = _start_mlflow_server(tmp_path, port=port)
    run = _start(_workflow(tmp_path, data_root, uri))
    work = tmp_path / "work"
    try:
        _wait_for(lambda: _checkpoints(work), "first checkpoint", run)
        _stop(server)  # the server goes away in the middle of pretraining ...
        stopped_at = len(_checkpoints(work))
        _wait_for(lambda: len(_checkpoints(work)) > stopped_at, "checkpoint while MLflow was down", run)
        server, _ = _start_mlflow_server(tmp_path, port=port)  # ... and comes back
        output, _ = run.communicate(timeout=900)
        assert run.returncode == 0, output[-6000:]
        _check_everything_arrived(MlflowClient(uri))
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        _stop(server)


def _check_everything_arrived(client: MlflowClient) -> None:
    experiment = client.get_experiment_by_name("faults")
    pretrain = next(r for r in client.search_runs([experiment.experiment_id])
                    if r.data.tags.get("bioray.stage") == "pretrain")
    assert pretrain.info.status == "FINISHED"
    # every logged step and every checkpoint record arrived, including those made during the outage
    assert [m.step for m in client.get_metric_history(pretrain.info.run_id, "pretrain/loss")] == list(
        range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    records = {a.path for a in client.list_artifacts(pretrain.info.run_id, "checkpoints")}
    assert records == {f"checkpoints/step-{s:08d}.json" for s in range(CHECKPOINT_EVERY, STEPS + 1, CHECKPOINT_EVERY)}


@pytest.mark.slow
def test_driver_killed_mid_dag_then_rerun_reuses_finished_stages(tmp_path, data_root):
    workflow = _workflow(tmp_path, data_root, None)  # MLflow in the workdir: sqlite
    work = tmp_path / "work"
    run = _start(workflow)
    try:
        _wait_for(lambda: _registered(work), "registered pretraining checkpoint", run)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # the driver and its local Ray, mid-pretraining
        run.wait()
    committed = {p.parent.parent.name for p in work.glob("stages/*/*/result.json")}  # stages/<name>/<key>/
    assert committed == {"ingest", "vocab", "tokenize"}
    half_written = list((work / "stages" / "pretrain").glob(".tmp-*"))
    assert len(half_written) == 1 and not (half_written[0] / "result.json").exists()

    again = run_bioray("pretrain", str(workflow))
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id],
                              order_by=["attributes.start_time DESC"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {r.data.tags["bioray.stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    # the rerun reuses what pretraining reads (ingest is not even needed: tokenize's output is there)
    assert {name: r.data.tags["bioray.cache"] for name, r in children.items()} == {
        "vocab": "hit", "tokenize": "hit", "pretrain": "miss"}
    assert {p.parent.parent.name for p in work.glob("stages/*/*/result.json")} == committed | {"pretrain"}
    result = json.loads(next((work / "stages" / "pretrain").glob("*/result.json")).read_text())
    assert Path(result["path"]).name != half_written[0].name  # the half-written directory was never committed
    history = json.loads((Path(result["path"]) / "history.json").read_text())
    assert [h["step"] for h in history] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    # the rerun resumed from the checkpoint the killed run had registered (same stage key, same Ray
    # Train run name and storage), instead of starting over: its steps are attempt 1
    resumed_from = next(h["step"] for h in history if h["attempt"] == 1) - LOG_EVERY
    assert resumed_from >= CHECKPOINT_EVERY and resumed_from % CHECKPOINT_EVERY == 0
    assert [h["attempt"] for h in history] == [0 if h["step"] <= resumed_from else 1 for h in history]

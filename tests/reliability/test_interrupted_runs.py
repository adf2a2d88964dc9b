"""Faults in a real pipeline run (CLI, local Ray, DeepSpeed on CPU): the MLflow server unreachable for a
while during pretraining, and the driver killed mid-DAG and run again. Both start from the session's
corpus workdir (ingest, vocab and tokenize cached), so they pay only for pretraining."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.support.cli import run_bioray, start_bioray
from tests.support.servers import TcpForwarder
from tests.support.workflows import PRETRAIN, copy_stages, small_workflow, write_workflow

STEPS, LOG_EVERY, CHECKPOINT_EVERY = 24, 2, 6
CORPUS = ("ingest", "vocab", "tokenize")


def _workflow(tmp_path: Path, data_root: Path, template: Path, tracking_uri: str | None) -> Path:
    """Pretraining on two workers over the template's shards; the other stages are copied."""
    work = tmp_path / "work"
    copy_stages(template, work, CORPUS)
    pretrain = {**PRETRAIN, "num_workers": 2, "steps": STEPS, "global_batch_size": 16, "log_every": LOG_EVERY,
                "checkpoint_every": CHECKPOINT_EVERY}
    tree = small_workflow(work, data_root, name="faults", pretrain=pretrain,
                          tracking={"uri": tracking_uri, "experiment": "faults"})
    return write_workflow(tree, tmp_path / "faults.yaml")


def _wait_for(condition, what: str, process: subprocess.Popen, seconds: float = 600) -> None:
    deadline = time.time() + seconds
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended before {what}:\n{process.stdout.read()[-6000:]}")
        if time.time() > deadline:
            pytest.fail(f"no {what} after {seconds:.0f}s")
        time.sleep(0.5)


def _registered_steps(work: Path) -> list[int]:
    """Steps of the checkpoints Ray Train has registered (what a new run under the same name restores)."""
    for snapshot in (work / "ray_train").glob("pretrain-*/checkpoint_manager_snapshot.json"):
        try:
            return [c["metrics"]["step"] for c in json.loads(snapshot.read_text())["checkpoint_results"]]
        except (ValueError, KeyError):  # being rewritten
            return []
    return []


@pytest.mark.extended
def test_pretraining_goes_on_while_the_tracking_server_is_unreachable(tmp_path, data_root, corpus_template,
                                                                      mlflow_server):
    forwarder = TcpForwarder(int(mlflow_server.rsplit(":", 1)[1]))
    run = start_bioray("pretrain", str(_workflow(tmp_path, data_root, corpus_template, forwarder.uri)))
    work = tmp_path / "work"
    try:
        _wait_for(lambda: _registered_steps(work), "first checkpoint", run)
        forwarder.down()  # the server becomes unreachable in the middle of pretraining ...
        down_at = max(_registered_steps(work))
        # by step, not by count: only the last keep_checkpoints stay registered
        _wait_for(lambda: max(_registered_steps(work), default=0) > down_at, "checkpoint while MLflow was down", run)
        forwarder.up()  # ... and comes back
        output, _ = run.communicate(timeout=900)
        assert run.returncode == 0, output[-6000:]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        forwarder.close()

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("faults")
    pretrain = next(r for r in client.search_runs([experiment.experiment_id])
                    if r.data.tags.get("bioray.stage") == "pretrain")
    assert pretrain.info.status == "FINISHED"
    # every logged step and every checkpoint record arrived, including those made during the outage
    assert [m.step for m in client.get_metric_history(pretrain.info.run_id, "pretrain/loss")] == list(
        range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    records = {a.path for a in client.list_artifacts(pretrain.info.run_id, "checkpoints")}
    assert records == {f"checkpoints/step-{s:08d}.json" for s in range(CHECKPOINT_EVERY, STEPS + 1, CHECKPOINT_EVERY)}


@pytest.mark.extended
def test_driver_killed_mid_dag_then_rerun_reuses_finished_stages(tmp_path, data_root, corpus_template):
    workflow = _workflow(tmp_path, data_root, corpus_template, None)  # MLflow in the workdir: sqlite
    work = tmp_path / "work"
    run = start_bioray("pretrain", str(workflow))
    try:
        _wait_for(lambda: _registered_steps(work), "registered pretraining checkpoint", run)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # the driver and its local Ray, mid-pretraining
        run.wait()
    committed = {p.parent.parent.name for p in work.glob("stages/*/*/result.json")}  # stages/<name>/<key>/
    assert committed == set(CORPUS)
    half_written = list((work / "stages" / "pretrain").glob(".tmp-*"))
    assert len(half_written) == 1 and not (half_written[0] / "result.json").exists()
    shown = run_bioray("status", str(workflow), "--json")
    assert {row["stage"]: row["status"] for row in json.loads(shown.stdout)}["pretrain"] == "interrupted"

    again = run_bioray("pretrain", str(workflow))
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id],
                              order_by=["attributes.start_time DESC"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {r.data.tags["bioray.stage"]: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    # the rerun reuses what pretraining reads (ingest is not even needed: tokenize's output is there)
    assert {name: r.data.tags["bioray.cache"] for name, r in children.items()} == {
        "vocab": "hit", "tokenize": "hit", "pretrain": "miss"}
    assert {p.parent.parent.name for p in work.glob("stages/*/*/result.json")} == committed | {"pretrain"}
    output = next((work / "stages" / "pretrain").glob("*/result.json")).parent
    assert output.name != half_written[0].name  # the half-written directory was never committed
    history = json.loads((output / "history.json").read_text())
    assert [h["step"] for h in history] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    # the rerun resumed from the checkpoint the killed run had registered (same stage key, same Ray
    # Train run name and storage), instead of starting over: its steps are attempt 1
    resumed_from = next(h["step"] for h in history if h["attempt"] == 1) - LOG_EVERY
    assert resumed_from >= CHECKPOINT_EVERY and resumed_from % CHECKPOINT_EVERY == 0
    assert [h["attempt"] for h in history] == [0 if h["step"] <= resumed_from else 1 for h in history]

"""The quickstart for real, through the CLI: local Ray, DeepSpeed over gloo, an MLflow server over HTTP.

One test, three runs: a first run executes every stage; an unchanged second run executes none; a
third run that changes only the fine-tuning learning rate re-runs only what depends on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]

WORKFLOW = str(REPO / "workflows" / "quickstart.yaml")
STAGES = ["ingest", "vocab", "tokenize", "pretrain", "finetune/ncbi-disease/seed-42", "evaluate/ncbi-disease/seed-42", "report",
          "register"]
# Shorter than the shipped quickstart (300 pretraining steps, 3 epochs) to keep CI time down.
FAST = ["--set", "pretrain.steps=60", "--set", "pretrain.log_every=10", "--set", "finetune.epochs=2"]


def _bioray(args: list[str], env: dict, expect: int = 0) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bioray.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1800)
    elapsed = time.perf_counter() - started
    assert done.returncode == expect, f"bioray {' '.join(args)}:\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    return done, elapsed


def _stage_runs(client: MlflowClient, experiment_id: str) -> tuple:
    """The newest parent run and its child runs by stage name."""
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=200)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {r.data.tags["bioray.stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    return parent, children


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path, mlflow_server, data_root):
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "BIORAY_WORKDIR": str(tmp_path / "work"),
           "BIORAY_DATA_ROOT": str(data_root)}
    client = MlflowClient(mlflow_server)

    # --- first run: everything executes --------------------------------------------------------
    _, first_seconds = _bioray(["run", WORKFLOW, *FAST], env)
    experiment = client.get_experiment_by_name("bioray-quickstart")
    parent, children = _stage_runs(client, experiment.experiment_id)
    assert parent.info.status == "FINISHED"
    assert sorted(children) == sorted(STAGES)
    for name, run in children.items():
        assert run.info.status == "FINISHED", name
        assert run.data.tags["bioray.cache"] == "miss", name
        assert len(run.data.tags["bioray.stage_key"]) == 16
        assert "mlflow.source.git.commit" in run.data.tags

    f1 = children["evaluate/ncbi-disease/seed-42"].data.metrics["ner/test_f1"]
    assert 0 < f1 <= 1
    assert parent.data.metrics["ncbi-disease/ner/test_f1"] == pytest.approx(f1)
    # the report: our score beside the published ones, on the report stage's run and the parent run
    assert children["report"].data.metrics["report/ncbi-disease/f1"] == pytest.approx(100 * f1)
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "scores.png"} <= parent_files
    report = Path(client.download_artifacts(parent.info.run_id, "report.md", str(tmp_path))).read_text()
    assert "| ncbi-disease | ner | f1 |" in report and "89.13" in report  # BioBERT v1.1 in BLURB

    pretrain = children["pretrain"]
    assert pretrain.data.params["zero_stage"] == "2" and pretrain.data.params["num_workers"] == "2"
    losses = client.get_metric_history(pretrain.info.run_id, "pretrain/loss")
    assert [m.step for m in losses] == [10, 20, 30, 40, 50, 60]
    assert losses[-1].value < losses[0].value  # it learns
    phases = client.get_metric_history(pretrain.info.run_id, "pretrain/seq_len")
    assert [m.value for m in phases] == [128] * 5 + [256]  # the last 10% of 60 steps (55-60) at 256
    assert children["tokenize"].data.metrics["tokenize/long_fill_ratio"] > 0.9
    assert client.get_metric_history(pretrain.info.run_id, "pretrain/tokens_per_s")[-1].value > 0
    # lineage: each stage's inputs are MLflow datasets, digests = the upstream stage keys / file fingerprints
    inputs = {d.dataset.name: d for d in client.get_run(pretrain.info.run_id).inputs.dataset_inputs}
    assert inputs["tokenize"].dataset.digest == children["tokenize"].data.tags["bioray.stage_key"]
    tuned = client.get_run(children["finetune/ncbi-disease/seed-42"].info.run_id).inputs.dataset_inputs
    train_file = next(d for d in tuned if d.dataset.name == "train.tsv")
    assert {t.key: t.value for t in train_file.tags}["mlflow.data.context"] == "train"
    assert len({d.dataset.digest for d in tuned}) == len(tuned) == 4  # pretrain output + 3 data files
    # system metrics sampled on the training workers
    assert any(k.startswith("system/") for k in client.get_run(pretrain.info.run_id).data.metrics)
    artifacts = {a.path for a in client.list_artifacts(pretrain.info.run_id)}
    assert {"loss_curve.png", "deepspeed_config.json", "history.json", "result.json"} <= artifacts
    ingest = children["ingest"].data.metrics
    assert ingest["ingest/quarantined_files"] == 0 and ingest["ingest/documents_pmc-oa"] == 8
    assert children["tokenize"].data.metrics["tokenize/fill_ratio"] > 0.5

    version = client.get_model_version_by_alias("bioray-encoder", "challenger")
    assert version.tags["ncbi-disease/seed-42/ner/test_f1"]
    assert float(version.tags["report/ncbi-disease/f1"]) == pytest.approx(100 * f1, abs=1e-4)
    # the first version meets no champion: it becomes the champion, and the decision is on the runs
    assert client.get_model_version_by_alias("bioray-encoder", "champion").version == version.version
    assert children["register"].data.metrics["gate/promoted"] == 1
    assert "promotion.md" in parent_files
    import mlflow
    from transformers import AutoModel

    mlflow.set_tracking_uri(mlflow_server)
    files = Path(mlflow.artifacts.download_artifacts("models:/bioray-encoder@challenger", dst_path=str(tmp_path / "dl")))
    encoder = AutoModel.from_pretrained(str(files / "model"))
    assert encoder.config.num_hidden_layers == 2 and encoder.config.hidden_size == 128

    # --- second run, unchanged: nothing executes ----------------------------------------------
    _, second_seconds = _bioray(["run", WORKFLOW, *FAST], env)
    parent2, children2 = _stage_runs(client, experiment.experiment_id)
    assert parent2.info.run_id != parent.info.run_id and parent2.info.status == "FINISHED"
    assert {name: run.data.tags["bioray.cache"] for name, run in children2.items()} == {name: "hit" for name in STAGES}
    assert children2["evaluate/ncbi-disease/seed-42"].data.metrics["ner/test_f1"] == pytest.approx(f1)
    status, _ = _bioray(["status", WORKFLOW, "--json", *FAST], env)
    assert {row["stage"]: row["status"] for row in json.loads(status.stdout)} == {name: "cached" for name in STAGES}
    _bioray(["evaluate", WORKFLOW, *FAST], env)  # one stage: its cached output is reused, nothing else is touched
    parent_eval, children_eval = _stage_runs(client, experiment.experiment_id)
    assert list(children_eval) == ["evaluate/ncbi-disease/seed-42"]
    assert parent_eval.data.tags["bioray.targets"] == "evaluate/ncbi-disease/seed-42"
    print(f"NCBI-disease test F1 {f1:.4f}; first run {first_seconds:.1f}s, unchanged second run {second_seconds:.1f}s "
          f"({100 * second_seconds / first_seconds:.1f}% of the first)")

    # --- third run, only the fine-tuning learning rate changed ---------------------------------
    _bioray(["run", WORKFLOW, *FAST, "--set", "finetune.lr=2e-3"], env)
    _, children3 = _stage_runs(client, experiment.experiment_id)
    reran = {name for name, run in children3.items() if run.data.tags["bioray.cache"] == "miss"}
    assert reran == {"finetune/ncbi-disease/seed-42", "evaluate/ncbi-disease/seed-42", "report", "register"}
    assert client.get_model_version_by_alias("bioray-encoder", "challenger").version == "2"
    # the gate: version 2 takes `champion` exactly when its F1 beats version 1's (margin 0)
    f1_v2 = children3["evaluate/ncbi-disease/seed-42"].data.metrics["ner/test_f1"]
    promoted = children3["register"].data.metrics["gate/promoted"] == 1
    assert promoted == (100 * f1_v2 > 100 * f1 + 1e-6)
    champion = client.get_model_version_by_alias("bioray-encoder", "champion").version
    assert champion == ("2" if promoted else "1")

    # --- fourth run, a broken training file: its stage fails naming file and line, the rest is untouched
    broken = tmp_path / "broken_train.tsv"
    broken.write_text("Aspirin\tO\nthis line has no tag column\n")
    done, _ = _bioray(["run", WORKFLOW, *FAST, "--set", f"finetune.datasets[0].train={broken}"], env, expect=1)
    assert "broken_train.tsv:2: expected 'token<TAB>tag'" in done.stderr
    parent4, children4 = _stage_runs(client, experiment.experiment_id)
    assert parent4.info.status == "FAILED"
    assert children4["pretrain"].data.tags["bioray.cache"] == "hit"
    assert children4["finetune/ncbi-disease/seed-42"].info.status == "FAILED"
    assert "broken_train.tsv:2" in children4["finetune/ncbi-disease/seed-42"].data.tags["bioray.error"]
    for downstream in ("report", "register"):
        assert children4[downstream].data.tags["bioray.error"] == ("not run: upstream stage "
                                                                   "evaluate/ncbi-disease/seed-42 failed")
    assert client.get_model_version_by_alias("bioray-encoder", "challenger").version == "2"  # nothing registered

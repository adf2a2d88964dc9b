"""The quickstart on a cluster, as users run it there: `ray job submit` to a two-node Ray cluster (token auth),
DeepSpeed over gloo, an `mlflow server` with basic auth over HTTP, credentials only in the nodes'
environment.

One test, four runs: a first run executes every stage (on both nodes); an unchanged second run
executes none; a third run that changes only the fine-tuning learning rate re-runs only what depends
on it; a fourth with a broken training file stops before any stage. Then the MLflow store, the Ray
logs and the workdir are searched for every secret (MLflow passwords, Flask key, Ray token, and S3
keys planted in the nodes' environment): none may be there.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.support.cluster import two_node_ray_cluster
from tests.support.data import pmc_articles

REPO = Path(__file__).resolve().parents[2]

WORKFLOW = str(REPO / "workflows" / "quickstart.yaml")
STAGES = ["ingest", "vocab", "tokenize", "pretrain", "finetune/ncbi-disease/seed-42", "evaluate/ncbi-disease/seed-42",
          "report", "register-task/ncbi-disease", "register"]
# Fewer pretraining steps than the shipped quickstart (300) to keep CI time down; its 3 fine-tuning epochs
# (on sample-data's 1,000 sentences, fewer leave a model that tags nothing).
FAST = ["--set", "pretrain.steps=20", "--set", "pretrain.log_every=10", "--set", "pretrain.warmup_steps=2"]


def _bioray(args: list[str], env: dict, expect: int = 0) -> tuple[subprocess.CompletedProcess, float]:
    """The CLI on this machine (commands that start no Ray)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bioray.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1800)
    elapsed = time.perf_counter() - started
    assert done.returncode == expect, f"bioray {' '.join(args)}:\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    return done, elapsed


class Submitter:
    """`ray job submit` as the README shows it: the checkout as working dir, cluster/runtime_env.yaml
    with this machine's paths, `-- bioray run workflows/quickstart.yaml`."""

    def __init__(self, cluster, runtime_env: dict, tmp_path: Path):
        self.cluster, self.count = cluster, 0
        self.commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                     check=True).stdout.strip()
        self.runtime_env = tmp_path / "runtime_env.yaml"
        self.runtime_env.write_text(yaml.safe_dump(runtime_env))

    def __call__(self, args: list[str], expect: int = 0) -> tuple[str, str, float]:
        self.count += 1
        submission_id = f"bioray-quickstart-{self.count}-{os.getpid()}"
        command = [str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", self.cluster.dashboard,
                   "--submission-id", submission_id, "--metadata-json", json.dumps({"git_commit": self.commit}),
                   "--working-dir", str(REPO), "--runtime-env",
                   str(self.runtime_env), "--", "bioray", "run", "workflows/quickstart.yaml", *args]
        started = time.perf_counter()
        for _ in range(12):  # the head's job agent may not have registered yet: nothing was submitted, ask again
            done = subprocess.run(command, cwd=REPO, env={**os.environ, **self.cluster.env}, capture_output=True,
                                  text=True, timeout=1800)
            if "No available agent to submit job" not in done.stderr:
                break
            time.sleep(5)
        elapsed = time.perf_counter() - started
        output = done.stdout + done.stderr
        assert done.returncode == expect, f"{submission_id}:\n{output[-8000:]}"
        return submission_id, output, elapsed


def _stage_runs(client: MlflowClient, experiment_id: str) -> tuple:
    """The newest parent run and its child runs by stage name."""
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=200)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {r.data.tags["bioray.stage"]: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    return parent, children


def _job_nodes(cluster, submission_id: str) -> set[str]:
    """The nodes the job's tasks and actors ran on, from Ray's state API."""
    job_id = cluster.get(f"/api/jobs/{submission_id}")["job_id"]
    query = f"limit=10000&detail=1&filter_keys=job_id&filter_predicates=%3D&filter_values={job_id}"
    rows = [row for kind in ("tasks", "actors")
            for row in cluster.get(f"/api/v0/{kind}?{query}")["data"]["result"]["result"]]
    return {row["node_id"] for row in rows if row.get("node_id")}


def _leaks(roots: list[Path], secrets: list[str]) -> list[str]:
    """Files under roots holding any of the secrets (bytes, so databases and binaries count too)."""
    needles = [s.encode() for s in secrets]
    return [str(path) for root in roots for path in root.rglob("*")
            if path.is_file() and any(n in path.read_bytes() for n in needles)]


@pytest.mark.extended
@pytest.mark.timeout(1800)
def test_quickstart_as_ray_jobs_on_a_two_node_cluster(tmp_path, mlflow_auth_server, data_root, monkeypatch):
    server = mlflow_auth_server
    credentials = server.credentials
    for name, value in credentials.items():  # this test's own MLflow client; the pipeline's are on the nodes
        monkeypatch.setenv(name, value)
    work = tmp_path / "work"
    shipped = yaml.safe_load((REPO / "cluster" / "runtime_env.yaml").read_text())
    runtime_env = {**shipped, "env_vars": {**shipped["env_vars"], "BIORAY_DATA_ROOT": str(data_root),
                                           "BIORAY_WORKDIR": str(work), "MLFLOW_TRACKING_URI": server.uri}}
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri, "BIORAY_WORKDIR": str(work),
           "BIORAY_DATA_ROOT": str(data_root)}
    client = MlflowClient(server.uri)
    # S3 keys planted beside the MLflow credentials in every node's environment, as a Kubernetes Secret
    # would put them there: the pipeline runs with them and must write them nowhere
    s3_keys = {"AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
               "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30)}
    with two_node_ray_cluster({**credentials, **s3_keys}) as cluster:
        submit = Submitter(cluster, runtime_env, tmp_path)
        _check_runs(submit, cluster, client, env, tmp_path, server.uri, data_root)
        leaks = _leaks([server.store, cluster.temp_dir, work], [*server.secrets, cluster.token, *s3_keys.values()])
    assert leaks == []


def _check_runs(submit: Submitter, cluster, client: MlflowClient, env: dict, tmp_path: Path, uri: str,
                data_root: Path) -> None:
    # unauthenticated, the server refuses
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    assert refused.value.code == 401

    # --- first run: everything executes, on both nodes ------------------------------------------
    job, _, first_seconds = submit(FAST)
    experiment = client.get_experiment_by_name("bioray-quickstart")
    parent, children = _stage_runs(client, experiment.experiment_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["ray.job_id"] == job
    assert sorted(children) == sorted(STAGES)
    nodes = cluster.node_ids()
    for name, run in children.items():
        assert run.info.status == "FINISHED", name
        assert run.data.tags["bioray.cache"] == "miss", name
        assert len(run.data.tags["bioray.stage_key"]) == 16
        assert run.data.tags["mlflow.source.git.commit"] == submit.commit  # the upload has no .git: job metadata
        assert run.data.tags["ray.job_id"] == job and run.data.tags["ray.node_id"] in nodes
    assert _job_nodes(cluster, job) == nodes  # Ray Data tasks, stage tasks and training workers on both

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
    assert [m.step for m in losses] == [10, 20]
    phases = client.get_metric_history(pretrain.info.run_id, "pretrain/seq_len")
    assert [m.value for m in phases] == [128, 256]  # the last 10% of 20 steps (19-20) at 256
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
    assert ingest["ingest/quarantined_files"] == 0
    assert ingest["ingest/documents_pmc-oa"] == pmc_articles(data_root) > 0  # one document each
    assert children["tokenize"].data.metrics["tokenize/fill_ratio"] > 0.5

    version = client.get_model_version_by_alias("bioray-encoder", "challenger")
    assert version.tags["ncbi-disease/seed-42/ner/test_f1"]
    assert float(version.tags["report/ncbi-disease/f1"]) == pytest.approx(100 * f1, abs=1e-4)
    # the first version meets no champion: it becomes the champion, and the decision is on the runs
    assert client.get_model_version_by_alias("bioray-encoder", "champion").version == version.version
    assert children["register"].data.metrics["gate/promoted"] == 1
    assert "promotion.md" in parent_files
    # browsing: the encoder and the fine-tuned model load as working transformers pipelines
    mlflow.set_tracking_uri(uri)
    fill = mlflow.transformers.load_model("models:/bioray-encoder@challenger")
    assert fill.model.config.num_hidden_layers == 2 and fill.model.config.hidden_size == 128
    assert len(fill("Patients with chronic kidney [MASK] were enrolled.")) == 5
    tagger = mlflow.transformers.load_model(children["finetune/ncbi-disease/seed-42"].data.tags["bioray.mlflow_model"])
    assert set(tagger.model.config.id2label.values()) == {"B-ENT", "I-ENT", "O"}  # BioBERT's B/I, typed
    evaluated = Path(children["evaluate/ncbi-disease/seed-42"].data.tags["bioray.output"]) / "predictions.jsonl"
    tagged = next(" ".join(p["words"]) for p in map(json.loads, evaluated.read_text().splitlines())
                  if any(tag != "O" for tag in p["predicted"]))  # a sentence the model tagged in evaluation
    entities = tagger(tagged)
    assert entities and all({"entity", "score", "start", "end"} <= set(e) for e in entities)

    # --- second run, unchanged: nothing executes ----------------------------------------------
    _, _, second_seconds = submit(FAST)
    parent2, children2 = _stage_runs(client, experiment.experiment_id)
    assert parent2.info.run_id != parent.info.run_id and parent2.info.status == "FINISHED"
    assert {name: run.data.tags["bioray.cache"] for name, run in children2.items()} == {name: "hit" for name in STAGES}
    # a cached stage's run points at the run that produced its output, and copies none of its metrics
    assert {name: run.data.tags["bioray.produced_by"] for name, run in children2.items()} == {
        name: run.info.run_id for name, run in children.items()}
    assert not any(run.data.metrics for run in children2.values())
    status, _ = _bioray(["status", WORKFLOW, "--json", *FAST], env)
    assert {row["stage"]: row["status"] for row in json.loads(status.stdout)} == {name: "cached" for name in STAGES}
    _bioray(["evaluate", WORKFLOW, *FAST], env)  # one stage: its cached output is reused, nothing else is touched
    parent_eval, children_eval = _stage_runs(client, experiment.experiment_id)
    assert list(children_eval) == ["evaluate/ncbi-disease/seed-42"]
    assert parent_eval.data.tags["bioray.targets"] == "evaluate/ncbi-disease/seed-42"
    print(f"NCBI-disease test F1 {f1:.4f}; first run {first_seconds:.1f}s, unchanged second run {second_seconds:.1f}s "
          f"({100 * second_seconds / first_seconds:.1f}% of the first)")

    # --- third run, only the fine-tuning learning rate changed ---------------------------------
    submit([*FAST, "--set", "finetune.lr=2e-3"])
    parent3, children3 = _stage_runs(client, experiment.experiment_id)
    reran = {name for name, run in children3.items() if run.data.tags["bioray.cache"] == "miss"}
    assert reran == {"finetune/ncbi-disease/seed-42", "evaluate/ncbi-disease/seed-42", "report",
                     "register-task/ncbi-disease", "register"}
    assert client.get_model_version_by_alias("bioray-encoder", "challenger").version == "2"
    # the gate: version 2 takes `champion` exactly when its F1 beats version 1's (margin 0)
    f1_v2 = children3["evaluate/ncbi-disease/seed-42"].data.metrics["ner/test_f1"]
    promoted = children3["register"].data.metrics["gate/promoted"] == 1
    assert promoted == (100 * f1_v2 > 100 * f1 + 1e-6)
    champion = client.get_model_version_by_alias("bioray-encoder", "champion").version
    assert champion == ("2" if promoted else "1")

    # --- fourth run, a broken training file: found before any stage runs, naming file and line ------
    broken = tmp_path / "broken_train.tsv"
    broken.write_text("Aspirin\tO\nthis line has no tag column\n")
    _, output, _ = submit([*FAST, "--set", f"finetune.datasets[0].train={broken}"], expect=1)
    assert "finetune.datasets[0] (ncbi-disease): " in output
    assert "broken_train.tsv:2: expected 'token<TAB>tag'" in output
    parent4, _ = _stage_runs(client, experiment.experiment_id)
    assert parent4.info.run_id == parent3.info.run_id  # no pipeline run was started
    assert client.get_model_version_by_alias("bioray-encoder", "challenger").version == "2"  # nothing registered

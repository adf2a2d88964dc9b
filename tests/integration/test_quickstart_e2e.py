"""The quickstart as a user runs it, in its cheapest real form: `bioray run workflows/quickstart.yaml`
through the CLI, its own local Ray, DeepSpeed over gloo, an `mlflow server` with basic auth over
HTTP, credentials only in the environment. Few pretraining steps, the quickstart's fine-tuning (3 epochs:
on sample-data's 1,000 sentences, fewer leave a model that tags nothing).

Fine-tuning runs as two DDP workers. Then: an unchanged rerun runs nothing; a broken training file fails that stage
alone, naming file:line; `bioray predict` tags text with the fine-tuned model from MLflow; no secret is written
anywhere (MLflow store, workdir, Ray's logs). The two-node `ray job submit` version of this test is
in the extended tier (test_cluster_e2e.py)."""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.support.cli import REPO, run_bioray
from tests.support.data import pmc_articles
from tests.support.servers import leaks

WORKFLOW = str(REPO / "workflows" / "quickstart.yaml")
SEEDS = [42]
TUNED = [f"finetune/ncbi-disease/seed-{seed}" for seed in SEEDS]
EVALUATED = [f"evaluate/ncbi-disease/seed-{seed}" for seed in SEEDS]
STAGES = ["ingest", "vocab", "tokenize", "pretrain", *TUNED, *EVALUATED, "report", "register-task/ncbi-disease",
          "register"]
# 10 steps (the last at 256 tokens: the long phase)
QUICK = ["--set", "pretrain.steps=10", "--set", "pretrain.log_every=5", "--set", "pretrain.warmup_steps=2",
         "--set", f"finetune.seeds={SEEDS}", "--set", "finetune.num_workers=2"]


def _latest(client: MlflowClient, experiment_id: str) -> tuple:
    """The newest parent run and its child runs by stage name."""
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=200)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {r.data.tags["bioray.stage"]: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    return parent, children


@pytest.fixture
def ray_temp():
    """The CLI's local Ray keeps its session logs here (short: Ray's socket paths have a length limit)."""
    directory = Path(tempfile.mkdtemp(prefix="rq-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_quickstart_end_to_end(tmp_path, mlflow_auth_server, data_root, monkeypatch, ray_temp):
    server = mlflow_auth_server
    for name, value in server.credentials.items():  # this test's own MLflow client
        monkeypatch.setenv(name, value)
    # S3 keys beside the MLflow credentials, as a Kubernetes Secret would put them: used by nobody here,
    # written nowhere
    s3_keys = {"AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
               "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30)}
    work = tmp_path / "work"
    env = {**server.credentials, **s3_keys, "MLFLOW_TRACKING_URI": server.uri, "BIORAY_WORKDIR": str(work),
           "BIORAY_DATA_ROOT": str(data_root), "RAY_TMPDIR": str(ray_temp)}
    client = MlflowClient(server.uri)

    with pytest.raises(urllib.error.HTTPError) as refused:  # unauthenticated, the server refuses
        urllib.request.urlopen(f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    assert refused.value.code == 401

    # --- first run: every stage executes --------------------------------------------------------
    first = run_bioray("run", WORKFLOW, *QUICK, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-6000:]
    # a quiet terminal (not a TTY): bioray's lines only, every stage with i/N; the rest in the log file
    shown = (first.stdout + first.stderr).splitlines()
    assert len(shown) <= 60, "\n".join(shown)
    assert all(any(f"/{len(STAGES)}] {name} done in " in line for line in shown) for name in STAGES), shown
    assert any(" | step 10/10 " in line for line in shown), shown  # pretraining's progress, from its worker
    log_file = Path(next(line for line in shown if line.startswith("bioray: full log in ")).split(" in ", 1)[1])
    assert log_file.is_relative_to(work) and "INFO" in log_file.read_text()
    experiment = client.get_experiment_by_name("bioray-quickstart")
    parent, children = _latest(client, experiment.experiment_id)
    assert parent.info.status == "FINISHED"
    assert sorted(children) == sorted(STAGES)
    for name, run in children.items():
        assert run.info.status == "FINISHED" and run.data.tags["bioray.cache"] == "miss", name
        assert len(run.data.tags["bioray.stage_key"]) == 16

    pretrain = children["pretrain"]
    assert pretrain.data.params["zero_stage"] == "2" and pretrain.data.params["num_workers"] == "2"
    assert [m.step for m in client.get_metric_history(pretrain.info.run_id, "pretrain/loss")] == [5, 10]
    phases = client.get_metric_history(pretrain.info.run_id, "pretrain/seq_len")
    assert [m.value for m in phases] == [128, 256]  # the last 10% of the steps on the long sequences
    inputs = {d.dataset.name: d for d in client.get_run(pretrain.info.run_id).inputs.dataset_inputs}
    assert inputs["tokenize"].dataset.digest == children["tokenize"].data.tags["bioray.stage_key"]  # lineage
    artifacts = {a.path for a in client.list_artifacts(pretrain.info.run_id)}
    assert {"loss_curve.png", "deepspeed_config.json", "history.json", "result.json"} <= artifacts
    ingest = children["ingest"].data.metrics
    assert ingest["ingest/quarantined_files"] == 0
    assert ingest["ingest/documents_pmc-oa"] == pmc_articles(data_root) > 0  # one document each

    assert all(children[name].data.params["training.num_workers"] == "2" for name in TUNED)

    scores = []
    for name in EVALUATED:
        output = Path(children[name].data.tags["bioray.output"])
        predictions = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
        assert sum(1 for p in predictions for tag in p["predicted"] if tag != "O") > 0  # it tags something
        scores.append(children[name].data.metrics["ner/test_f1"])
    f1 = sum(scores) / len(scores)
    assert all(0 < score <= 1 for score in scores)
    assert parent.data.metrics["ncbi-disease/ner/test_f1"] == pytest.approx(f1)
    assert children["report"].data.metrics["report/ncbi-disease/f1"] == pytest.approx(100 * f1)
    report = Path(client.download_artifacts(parent.info.run_id, "report.md", str(tmp_path))).read_text()
    assert "| ncbi-disease | ner | f1 |" in report and "89.13" in report  # BioBERT v1.1 in BLURB
    version = client.get_model_version_by_alias("bioray-encoder", "challenger")
    assert float(version.tags["report/ncbi-disease/f1"]) == pytest.approx(100 * f1, abs=1e-4)
    assert client.get_model_version_by_alias("bioray-encoder", "champion").version == version.version
    tagger = client.get_model_version_by_alias("bioray-ner-ncbi-disease", "challenger")  # the fine-tuned model
    assert float(tagger.tags["ner/test_f1"]) == pytest.approx(f1, abs=1e-6)

    # --- an unchanged rerun runs nothing, and needs no Ray ---------------------------------------
    second = run_bioray("run", WORKFLOW, *QUICK, env=env)
    assert second.returncode == 0, second.stderr[-4000:]
    parent2, children2 = _latest(client, experiment.experiment_id)
    assert parent2.info.run_id != parent.info.run_id
    assert {name: run.data.tags["bioray.cache"] for name, run in children2.items()} == {name: "hit" for name in STAGES}
    assert {name: run.data.tags["bioray.produced_by"] for name, run in children2.items()} == {
        name: run.info.run_id for name, run in children.items()}  # no copies of their metrics
    assert not any(run.data.metrics for run in children2.values())
    status = run_bioray("status", WORKFLOW, "--json", *QUICK, env=env)
    assert {row["stage"]: row["status"] for row in json.loads(status.stdout)} == {name: "cached" for name in STAGES}

    # --- a broken training file: found before any stage runs, naming file and line; nothing runs -----
    broken = tmp_path / "broken_train.tsv"
    broken.write_text("Aspirin\tO\nthis line has no tag column\n")
    third = run_bioray("run", WORKFLOW, *QUICK, "--set", f"finetune.datasets[0].train={broken}", env=env)
    assert third.returncode == 2, third.stderr[-4000:]
    assert "finetune.datasets[0] (ncbi-disease): " in third.stderr
    assert "broken_train.tsv:2: expected 'token<TAB>tag'" in third.stderr and "Traceback" not in third.stderr
    parent3, _ = _latest(client, experiment.experiment_id)
    assert parent3.info.run_id == parent2.info.run_id  # no pipeline run was started
    assert client.get_model_version_by_alias("bioray-encoder", "challenger").version == version.version

    # --- bioray predict with the fine-tuned model logged in MLflow -------------------------------
    model_uri = children[TUNED[-1]].data.tags["bioray.mlflow_model"]
    sentences = [" ".join(p["words"]) for p in predictions if any(tag != "O" for tag in p["predicted"])][:5]
    predicted = run_bioray("predict", "--model", model_uri, env=env, stdin="\n".join(sentences))
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [line["text"] for line in lines] == sentences
    entities = [(line["text"], e) for line in lines for e in line["entities"]]
    assert entities, "the model tagged these sentences in evaluation but predict finds nothing"
    assert all(text[e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1 for text, e in entities)

    # --- no credential anywhere bioray or its tracking server wrote ------------------------------
    assert leaks([server.store, work, ray_temp], [*server.secrets, *s3_keys.values()]) == []

"""A fine-tuned NER model from the pipeline to an HTTP endpoint: the real runner (the session's tiny
pretrained encoder, NCBI-disease fine-tuning, evaluation, register-task) against an `mlflow server`
over HTTP; then the registered model `bioray-ner-ncbi-disease@challenger` three ways, finding the same
entities in the same sentences: `bioray predict`, its Hugging Face pipeline from
`mlflow.transformers.load_model` (first-sub-token aggregation), and `mlflow models serve` answering a
POST to /invocations. The test set's predictions are an artifact of the evaluate stage's run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.support.cli import run_bioray
from tests.support.entities import same_entities
from tests.support.servers import serve_model
from tests.support.workflows import NCBI, copy_stages, mlflow_state_kept, run_in_process, small_workflow, write_workflow

MODEL = "bioray-ner-ncbi-disease"
EVALUATED = "evaluate/ncbi-disease/seed-42"


def _stage_runs(client: MlflowClient, parent_run_id: str) -> dict:
    runs = client.search_runs([client.get_run(parent_run_id).info.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return {run.data.tags["bioray.stage"]: run for run in runs}


@pytest.mark.extended
@pytest.mark.timeout(1500)
def test_a_registered_ner_model_serves_what_bioray_predict_prints(pretrained_template, data_root, mlflow_server,
                                                                    tmp_path):
    import mlflow

    work = tmp_path / "work"
    copy_stages(pretrained_template, work, ("ingest", "vocab", "tokenize", "pretrain"))
    tree = small_workflow(work, data_root, name="task-models",
                          tracking={"uri": mlflow_server, "experiment": "task-models"},
                          finetune={"datasets": [{**NCBI, "max_train_examples": 1000}], "epochs": 3, "lr": 2e-3,
                                    "batch_size": 16, "max_length": 64})
    summary = run_in_process(write_workflow(tree, tmp_path / "wf.yaml"), ["register-task/ncbi-disease"])
    assert not summary.failed, summary.failed
    assert summary.results["pretrain"].cached  # the session's tiny pretrained encoder

    # --- the test set's predictions are on the evaluate stage's run --------------------------------
    client = MlflowClient(mlflow_server)
    runs = _stage_runs(client, summary.parent_run_id)
    evaluate = runs[EVALUATED]
    assert "predictions.jsonl" in {a.path for a in client.list_artifacts(evaluate.info.run_id)}
    logged = Path(client.download_artifacts(evaluate.info.run_id, "predictions.jsonl", str(tmp_path)))
    output = Path(summary.results[EVALUATED].path)
    assert logged.read_bytes() == (output / "predictions.jsonl").read_bytes()

    # --- one version, its test score a tag, the alias on it; its model is the fine-tuning run's ------
    version = client.get_model_version_by_alias(MODEL, "challenger")
    assert float(version.tags["ner/test_f1"]) == pytest.approx(evaluate.data.metrics["ner/test_f1"], abs=1e-6)
    assert version.tags["evaluation"] == EVALUATED and version.tags["seed"] == "42"
    assert version.run_id == runs["finetune/ncbi-disease/seed-42"].info.run_id
    registration = json.loads((Path(summary.results["register-task/ncbi-disease"].path) /
                               "registration.json").read_text())
    assert registration["alias_version"] == str(version.version)

    # sentences the model tagged in evaluation, and one with nothing to find
    rows = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    texts = [" ".join(r["words"]) for r in rows  # short: one window both ways (the pipeline truncates)
             if any(tag != "O" for tag in r["predicted"]) and len(r["words"]) <= 40][:6]
    texts.append("The patients were seen in the clinic .")
    assert len(texts) > 1, "the fine-tuned model tags no disease in the NCBI-disease test set"
    uri = f"models:/{MODEL}@challenger"

    predicted = run_bioray("predict", "--model", uri, env={"MLFLOW_TRACKING_URI": mlflow_server},
                           stdin="\n".join(texts))
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [line["text"] for line in lines] == texts
    assert any(line["entities"] for line in lines)

    with mlflow_state_kept():
        mlflow.set_tracking_uri(mlflow_server)
        pipeline = mlflow.transformers.load_model(uri, aggregation_strategy="first")
    found = pipeline(texts)
    assert all(same_entities(f, line["entities"]) for f, line in zip(found, lines)), (found, lines)

    server = serve_model(uri, tmp_path / "serve.log", env={"MLFLOW_TRACKING_URI": mlflow_server})
    try:
        answer = server.invoke({"inputs": texts})
    finally:
        server.stop()
    assert answer == {"predictions": [{"entities": line["entities"]} for line in lines]}
    print("POST /invocations", json.dumps({"inputs": texts[:1]}), "->",
          json.dumps({"predictions": answer["predictions"][:1]}))

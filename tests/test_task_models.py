"""Fine-tuned task models in MLflow (a tiny random token classifier, a SQLite store): the logged model's
pyfunc (what `mlflow models serve` runs) answers as `bioray predict` does, its Hugging Face pipeline
(first-sub-token aggregation) finds the same entities, the registry gets one version per evaluation
with the alias on the dev-best, the register-task stage plans per dataset, and large outputs are logged
compressed and capped. The served-over-HTTP version is tests/integration/test_serving_e2e.py."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

from bioray.pipeline.inputs import load_checked
from bioray.pipeline.plan import build_plan, compute_keys
from bioray.tracking.registry import model_name
from tests.support.entities import same_entities

TEXTS = ["Germline mutations of the APC gene cause familial adenomatous polyposis.",
         "BRCA1_variant carriers, breast cancer and polyposis-like disease.",
         "",
         "No known words here whatsoever"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "germline", "mutations", "of", "the", "apc", "gene", "cause",
         "familial", "aden", "##omatous", "poly", "##posis", "brca", "##1", "variant", "carriers", "breast", "cancer",
         "and", "like", "disease", ".", ",", "-", "_"]


@pytest.fixture(scope="module")
def tagger(tmp_path_factory) -> Path:
    """A random 1-layer BERT token classifier with typed IOB2 labels, as the finetune stage saves one."""
    directory = tmp_path_factory.mktemp("tagger")
    BertTokenizerFast(vocab={word: i for i, word in enumerate(VOCAB)}, do_lower_case=True).save_pretrained(
        str(directory))
    torch.manual_seed(1)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=3,
                        id2label={0: "O", 1: "B-ENT", 2: "I-ENT"}, label2id={"O": 0, "B-ENT": 1, "I-ENT": 2})
    model = BertForTokenClassification(config)
    with torch.no_grad():  # a random head with some confidence: every label predicted somewhere
        model.classifier.weight.normal_(0, 2.0)
    model.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite MLflow store this process is pointed at (logging a model uses MLflow's fluent API)."""
    from bioray.tracking.store import activate
    from tests.support.workflows import mlflow_state_kept

    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with mlflow_state_kept():
        client = activate(uri)
        experiment = client.create_experiment("task-models", artifact_location=(root / "artifacts").as_uri())
        yield client, experiment


@pytest.fixture(scope="module")
def logged(tagger, store) -> str:
    from bioray.tasks.serving import log_task_model

    client, experiment = store
    run = client.create_run(experiment)
    return log_task_model(tagger, run.info.run_id, "model").model_uri


def test_served_pyfunc_answers_as_bioray_predict(tagger, logged):
    import mlflow
    from mlflow.pyfunc import scoring_server

    from bioray.tasks.inference import Predictor

    expected = Predictor(tagger)(TEXTS)
    assert any(line["entities"] for line in expected) and expected[2] == {"entities": []}
    local = Path(mlflow.artifacts.download_artifacts(logged))
    assert "bioray.tasks.serving" in (local / "MLmodel").read_text()  # the python_function loader
    served = mlflow.pyfunc.load_model(logged)
    assert served.predict(TEXTS) == expected
    # the scoring server's own request handling, as `mlflow models serve` runs it for POST /invocations
    answer = scoring_server.invocations(json.dumps({"inputs": TEXTS}), "application/json", served,
                                        served.metadata.get_input_schema())
    assert answer.status == 200, answer.response
    assert json.loads(answer.response) == {"predictions": expected}


def test_logged_pipeline_with_first_sub_token_aggregation_finds_the_same_entities(tagger, logged):
    import mlflow

    from bioray.tasks.inference import Predictor

    expected = Predictor(tagger)(TEXTS)
    pipeline = mlflow.transformers.load_model(logged, aggregation_strategy="first")
    found = [pipeline(text) if text else [] for text in TEXTS]
    assert all(same_entities(f, line["entities"]) for f, line in zip(found, expected)), (found, expected)
    # the default (no aggregation) tags sub-tokens the model was never trained on: not the same thing
    plain = mlflow.transformers.load_model(logged)
    assert any(e["word"].startswith("##") for e in plain(TEXTS[0]))


def test_each_evaluation_is_a_version_and_the_dev_best_gets_the_alias(tagger, logged, store, tmp_path):
    from bioray.pipeline.stages.register_task import TaskVersion, run_register_tasks
    from bioray.tracking.context import RunContext

    client, experiment = store
    run = client.create_run(experiment).info.run_id

    def facts(seed: int) -> dict:
        return {"dataset": "toy", "task": "ner", "seed": seed, "evaluation": f"evaluate/toy/seed-{seed}"}

    candidates = [TaskVersion(tagger, logged, 0.5, {"ner/test_f1": 0.25}, facts(1)),
                  TaskVersion(tagger, None, 0.75, {"ner/test_f1": 0.2}, facts(2)),
                  TaskVersion(tagger, "models:/m-not-in-this-store", 0.75, {"ner/test_f1": 0.3}, facts(3))]
    name = model_name("bioray", "ner", "toy")
    metrics = run_register_tasks(name, "challenger", candidates, context=RunContext(
        client.tracking_uri, experiment, run, run), output=tmp_path)
    assert metrics == {"register_task/versions": 3, "register_task/alias_version": 2}  # the first of the dev-best
    record = json.loads((tmp_path / "registration.json").read_text())
    assert [v["version"] for v in record["versions"]] == ["1", "2", "3"]
    assert record["versions"][0]["logged_model_uri"] == logged  # the fine-tuning run's own model, not a copy
    assert record["versions"][1]["logged_model_uri"] != logged  # not logged by its run: logged here
    version = client.get_model_version_by_alias(name, "challenger")
    assert str(version.version) == "2" and version.tags["ner/test_f1"] == "0.200000" and version.tags["seed"] == "2"
    assert version.run_id == run  # logged by the register-task stage's run


def test_registered_names_are_valid_mlflow_names():
    assert model_name("bioray", "ner", "ncbi-disease") == "bioray-ner-ncbi-disease"
    assert model_name("bioray", "qa_yesno", "my data/v2:x@y") == "bioray-qa_yesno-my-data-v2-x-y"
    with pytest.raises(ValueError, match="no registered model name"):
        model_name("bioray", "//")


def test_register_task_plans_one_node_per_dataset_and_has_its_own_switch(write_workflow, quickstart_tree):
    quickstart_tree["finetune"]["seeds"] = [1, 2]
    quickstart_tree["finetune"]["lr"] = [1e-3, 3e-4]
    nodes = {n.name: n for n in build_plan(load_checked(write_workflow(quickstart_tree)))}
    node = nodes["register-task/ncbi-disease"]
    assert node.params.model_name == "bioray-ner-ncbi-disease" and node.params.metric == "f1"
    assert list(node.params.evaluations) == ["evaluate/ncbi-disease/seed-1", "evaluate/ncbi-disease/seed-2"]
    assert node.params.evaluations["evaluate/ncbi-disease/seed-1"].finetune == [
        "finetune/ncbi-disease/seed-1/lr-0.001", "finetune/ncbi-disease/seed-1/lr-0.0003"]
    assert set(node.inputs) == set(node.params.evaluations) | {f"finetune/ncbi-disease/seed-{s}/lr-{lr}"
                                                               for s in (1, 2) for lr in ("0.001", "0.0003")}
    before = compute_keys(list(nodes.values()))
    quickstart_tree["registry"]["task_models"] = {"alias": "candidate"}
    after = compute_keys(build_plan(load_checked(write_workflow(quickstart_tree))))
    assert {name for name in before if before[name] != after[name]} == {"register-task/ncbi-disease"}
    quickstart_tree["registry"]["task_models"] = {"enabled": False}
    assert not [n for n in build_plan(load_checked(write_workflow(quickstart_tree))) if n.kind == "register-task"]
    quickstart_tree["registry"] = {"enabled": False}
    assert not [n for n in build_plan(load_checked(write_workflow(quickstart_tree))) if n.kind.startswith("register")]


class _Client:
    """Records what would be logged: artifact names and contents, tags."""

    def __init__(self):
        self.artifacts, self.tags = {}, {}

    def log_artifact(self, run_id, path):
        self.artifacts[Path(path).name] = Path(path).read_bytes()

    def set_tag(self, run_id, key, value):
        self.tags[key] = value


def test_large_outputs_are_logged_compressed_and_capped(tmp_path):
    from bioray.tracking.artifacts import SMALL_BYTES, log_output_file

    small, large = tmp_path / "small.jsonl", tmp_path / "predictions.jsonl"
    small.write_text('{"a": 1}\n')
    line = json.dumps({"words": ["x"] * 200, "predicted": ["O"] * 200}) + "\n"
    large.write_text(line * (SMALL_BYTES // len(line) + 10))
    client = _Client()
    assert log_output_file(client, "r", small)["artifact"] == "small.jsonl"
    assert client.artifacts["small.jsonl"] == small.read_bytes()

    whole = log_output_file(client, "r", large)
    assert whole["artifact"] == "predictions.jsonl.gz" and whole["kept"] == whole["lines"]
    assert gzip.decompress(client.artifacts["predictions.jsonl.gz"]) == large.read_bytes() and not client.tags

    capped = log_output_file(client, "r", large, cap=10 * len(line) + 5)
    assert gzip.decompress(client.artifacts["predictions.jsonl.gz"]) == (line * 10).encode()  # whole first lines
    assert client.tags == {"bioray.capped.predictions.jsonl": f"10 of {capped['lines']} lines"}


def test_register_task_ranks_a_grid_and_its_versions_by_the_entrys_metric(tagger, logged, store, tmp_path,
                                                                         write_workflow, quickstart_tree):
    """An entry scored by `metric: accuracy` (chemprot-scibert in blurb.yaml) with a learning-rate grid: the
    register-task stage reads `finetune/best_dev_accuracy`, what fine-tuning recorded for that entry."""
    from types import SimpleNamespace

    from bioray.pipeline.stages.base import StageEnv
    from bioray.tracking.context import RunContext

    files = {}
    for split in ("train", "dev", "test"):
        files[split] = str(tmp_path / f"{split}.jsonl")
        Path(files[split]).write_text("".join(json.dumps({"text": f"<< A{i} >> binds [[ B{i} ]].", "label": label})
                                              + "\n" for i, label in enumerate(["INHIBITOR", "false"] * 2)))
    quickstart_tree["finetune"].update(seeds=[1], lr=[1e-3, 3e-4], datasets=[
        {"name": "re", "task": "relation", "format": "jsonl", "metric": "accuracy", "text_column": "text", **files}])
    node = next(n for n in build_plan(load_checked(write_workflow(quickstart_tree))) if n.kind == "register-task")
    assert node.params.metric == "accuracy"

    def tuned(dev_accuracy: float):  # what a finetune stage's output offers the register-task stage
        return SimpleNamespace(model=tagger, mlflow_model=logged,
                               metrics={"finetune/best_dev_accuracy": dev_accuracy, "finetune/best_dev_f1": 0.0})

    (evaluation,) = node.params.evaluations
    low, high = node.params.evaluations[evaluation].finetune
    outputs = {evaluation: SimpleNamespace(metrics={"relation/test_accuracy": 0.5}), low: tuned(0.2), high: tuned(0.6)}
    inputs = node.inputs_by_role(outputs)
    client, experiment = store
    run = client.create_run(experiment).info.run_id
    config = load_checked(write_workflow(quickstart_tree))
    env = StageEnv(key="k", context=RunContext(client.tracking_uri, experiment, run, run), data_root=tmp_path,
                   datasets_root=tmp_path, train_storage=str(tmp_path), paths=config.paths)
    (tmp_path / "out").mkdir()
    node.stage.run(node, inputs, tmp_path / "out", env)
    version = client.get_model_version_by_alias(node.params.model_name, "challenger")
    assert version.tags["finetune"] == high  # the grid's dev-best by accuracy, not the first run

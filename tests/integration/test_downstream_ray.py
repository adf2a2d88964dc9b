"""Fine-tuning and evaluation of every non-NER task type on real data (subsets) with Ray Train,
through the registry entries of workflows/blurb.yaml; extractive QA on a SQuAD-format file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from transformers import BertConfig, BertForMaskedLM

from bioray.config import DatasetConfig, FinetuneConfig
from bioray.data.vocab import train_wordpiece
from bioray.pipeline.inputs import load_checked
from bioray.tasks.catalog import task_for
from bioray.tasks.evaluate import run_evaluate
from bioray.tasks.splits import load_splits
from bioray.tracking.context import RunContext
from bioray.train.finetune import run_finetune
from tests.support.data import needs_blurb_data

REPO = Path(__file__).resolve().parents[2]
pytestmark = needs_blurb_data  # an encoder with a vocabulary of the benchmarks' text, and their training sets
SUBSET = {"chemprot": 240, "biosses": None, "hoc": 240, "pubmedqa": 160}
SEED = 1


@pytest.fixture(scope="module")
def encoder(ray_session, tmp_path_factory, data_root):
    """A tiny randomly initialised BERT with a WordPiece vocabulary from the datasets' own text."""
    os.environ.setdefault("BIORAY_DATA_ROOT", str(data_root))
    suite = load_checked(REPO / "workflows" / "blurb.yaml")
    entries = {d.name: d for d in suite.finetune.datasets}
    texts = [e.text for name in SUBSET for e in load_splits(entries[name], suite.data_path)["train"][:300]]
    directory = tmp_path_factory.mktemp("encoder")
    tokenizer = train_wordpiece(texts, 3000, lowercase=True, min_frequency=1)
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=128, max_position_embeddings=512)).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory, suite, entries


def _training_loss(model_dir: Path, dataset: DatasetConfig, data_root: Path, labels: list[str], seed: int) -> float:
    """Mean loss over the training examples of the model in model_dir; an encoder gets the task's head,
    initialised as the fine-tuning run initialised it (same seed)."""
    import torch
    from transformers import AutoTokenizer

    task = task_for(dataset)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    torch.manual_seed(seed)
    model = task.build_model(str(model_dir), labels).eval()
    examples = load_splits(dataset, lambda p: data_root / p)["train"]
    features = task.encode(examples, tokenizer, labels, dataset.max_length or 128)
    with torch.no_grad():
        losses = [float(model(**task.collate(features[i:i + 32], tokenizer.pad_token_id)).loss)
                  for i in range(0, len(features), 32)]
    return sum(losses) / len(losses)


def _finetune(encoder_dir: Path, dataset: DatasetConfig, data_root: Path, tmp: Path, output: Path,
              **training) -> tuple[dict, MlflowClient, str]:
    """What the finetune stage does: its dataset read once, then the Ray Train run."""
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("t") or client.get_experiment(client.create_experiment("t"))
    run_id = client.create_run(experiment.experiment_id).info.run_id
    task = task_for(dataset)
    splits = load_splits(dataset, lambda p: data_root / p)
    labels = task.label_list(splits["train"], splits.get("dev", []))
    output.mkdir()
    config = FinetuneConfig(datasets=[dataset], **training).for_dataset(dataset)
    metrics = run_finetune(config, task, splits, labels, SEED, encoder_dir=encoder_dir, output=output,
                           context=RunContext(uri, experiment.experiment_id, run_id, run_id))
    return metrics, client, run_id


def _tune_and_score(encoder_dir: Path, dataset: DatasetConfig, data_root: Path, tmp: Path, epochs: int = 2) -> tuple:
    tuned, scored = tmp / "finetune", tmp / "evaluate"
    train, client, run_id = _finetune(encoder_dir, dataset, data_root, tmp, tuned, epochs=epochs, lr=1e-3,
                                      batch_size=16, max_length=128)
    scored.mkdir()
    test = run_evaluate(task_for(dataset), load_splits(dataset, lambda p: data_root / p)["test"],
                        model_dir=tuned / "model", labels=json.loads((tuned / "labels.json").read_text()),
                        max_length=128, batch_size=64, output=scored, title=dataset.name)
    rows = [json.loads(line) for line in (scored / "predictions.jsonl").read_text().splitlines()]
    return train, test, rows, client.get_metric_history(run_id, "finetune/train_loss")


@pytest.mark.extended
@pytest.mark.parametrize("name, metrics", [
    ("chemprot", {"relation/test_f1", "relation/test_precision", "relation/test_recall",  # positive classes
                  "relation/test_accuracy", "relation/test_macro_f1"}),  # all classes (`metric:` may pick one)
    ("biosses", {"similarity/test_pearson"}),
    ("hoc", {"doc_classification/test_micro_f1", "doc_classification/test_example_f1"}),
    ("pubmedqa", {"qa_yesno/test_accuracy", "qa_yesno/test_macro_f1"}),
])
def test_sequence_tasks_fine_tune_and_score_on_real_data(encoder, tmp_path, name, metrics):
    encoder_dir, suite, entries = encoder
    dataset = entries[name].model_copy(update={"max_train_examples": SUBSET[name], "max_length": 128})
    train, test, rows, losses = _tune_and_score(encoder_dir, dataset, Path(suite.data_root), tmp_path)
    assert set(test) == metrics and all(0.0 <= v <= 1.0 or name == "biosses" for v in test.values())
    assert len(rows) == len(load_splits(dataset, suite.data_path)["test"])
    epochs = dataset.epochs or 2  # the registry entry may set its own (BIOSSES, PubMedQA: 10)
    assert len(losses) == epochs and all(m.value == m.value for m in losses)  # logged per epoch, finite
    labels = json.loads((tmp_path / "finetune" / "labels.json").read_text())
    # it learned: on its training examples, the fine-tuned model's loss is below that of the model it
    # started from (the encoder with the task's head as the run initialised it)
    data_root = Path(suite.data_root)
    assert _training_loss(tmp_path / "finetune" / "model", dataset, data_root, labels, SEED) < _training_loss(
        encoder_dir, dataset, data_root, labels, SEED)
    if name == "chemprot":
        assert labels == ["False", "CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9"]  # the entry's label scheme
        assert {r["predicted"] for r in rows} <= set(labels)
    if name == "hoc":
        assert len(labels) == 10 and all(set(r["predicted"]) <= set(labels) for r in rows)
    if name == "biosses":
        assert labels == [] and all(isinstance(r["predicted"], float) for r in rows)


def _squad_file(path: Path, data_root: Path, count: int) -> None:
    """Real PubMed contexts (PubMedQA's); the answer is the span after 'of' in a context sentence."""
    records = json.loads((data_root / "PubMedQA" / "ori_pqal.json").read_text())
    paragraphs = []
    for pmid, record in list(records.items())[:count]:
        context = " ".join(record["CONTEXTS"])
        start = context.find(" of ") + 4
        answer = context[start:].split(" ")[0].strip(".,;:()")
        paragraphs.append({"context": context, "qas": [
            {"id": pmid, "question": record["QUESTION"], "answers": [{"text": answer, "answer_start": start}]}]})
    path.write_text(json.dumps({"version": "BioASQ-like", "data": [{"title": "t", "paragraphs": paragraphs}]}))


@pytest.mark.extended
def test_extractive_factoid_qa_on_a_squad_format_file(encoder, tmp_path, data_root):
    encoder_dir, suite, _ = encoder
    train_file, test_file = tmp_path / "train.json", tmp_path / "test.json"
    _squad_file(train_file, data_root, 80)
    _squad_file(test_file, data_root, 20)
    dataset = DatasetConfig(name="factoid", task="qa_factoid", train=str(train_file), test=str(test_file))
    _, test, rows, _ = _tune_and_score(encoder_dir, dataset, tmp_path, tmp_path, epochs=1)
    assert set(test) == {"qa_factoid/test_strict_accuracy", "qa_factoid/test_lenient_accuracy", "qa_factoid/test_mrr"}
    contexts = {p["qas"][0]["id"]: p["context"] for p in json.loads(test_file.read_text())["data"][0]["paragraphs"]}
    for row in rows:  # up to 5 ranked answers, each a span of its own context
        assert 1 <= len(row["predicted"]) <= 5 and all(a in contexts[row["id"]] for a in row["predicted"])


def _tuned(encoder_dir: Path, dataset: DatasetConfig, data_root: Path, tmp: Path) -> Path:
    _finetune(encoder_dir, dataset, data_root, tmp, tmp / "tuned", epochs=3, lr=2e-3, batch_size=16, max_length=64)
    return tmp / "tuned" / "model"


def _predict(model: str, lines: list[str], env: dict | None = None) -> list[dict]:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "bioray.cli", "predict", "--model", model], input="\n".join(lines),
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.extended
def test_predict_and_batch_tagging_with_a_fine_tuned_ner_model(encoder, tmp_path):
    import mlflow
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bioray.tasks.tagging import run_tagging

    encoder_dir, suite, entries = encoder
    ncbi = entries["ncbi-disease"].model_copy(update={"max_train_examples": 600})
    model = _tuned(encoder_dir, ncbi, Path(suite.data_root), tmp_path)

    # the model through an MLflow URI, as users pass registered or logged models
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(model), "ner-model")
    texts = ["Germline mutations of the APC gene cause familial adenomatous polyposis.",
             "Patients with hereditary breast and ovarian cancer were screened for BRCA1 mutations."]
    lines = _predict(f"runs:/{run.info.run_id}/ner-model", texts, {"MLFLOW_TRACKING_URI": uri})
    assert [line["text"] for line in lines] == texts
    found = [e for line in lines for e in line["entities"]]
    assert found, "a model fine-tuned on NCBI-disease finds no disease in two disease sentences"
    for line in lines:
        for entity in line["entities"]:
            assert line["text"][entity["start"]:entity["end"]] == entity["text"]
            assert entity["type"] == "ENT" and 0 < entity["score"] <= 1

    documents = tmp_path / "documents"
    documents.mkdir()
    abstracts = [e.text for e in load_splits(entries["hoc"], suite.data_path)["test"][:40]]
    starts = [[0] + [i + 2 for i in range(len(t)) if t.startswith(". ", i)] for t in abstracts]
    pq.write_table(pa.table({"doc_id": [f"hoc-{i}" for i in range(40)], "source": ["hoc"] * 40, "text": abstracts,
                             "sentence_starts": starts}), documents / "part-0.parquet")
    stats = run_tagging(model, documents, tmp_path / "tagged", actors=1)
    table = pq.read_table(tmp_path / "tagged" / "entities").to_pandas()
    assert stats["documents"] == 40 and stats["entities"] == len(table) > 0
    by_id = dict(zip([f"hoc-{i}" for i in range(40)], abstracts))
    for row in table.itertuples():  # document offsets, not sentence offsets
        assert by_id[row.doc_id][row.start:row.end] == row.text


@pytest.mark.extended
def test_predict_prints_label_probabilities_for_a_relation_model(encoder, tmp_path):
    encoder_dir, suite, entries = encoder
    chemprot = entries["chemprot"].model_copy(update={"max_train_examples": 200})
    model = _tuned(encoder_dir, chemprot, Path(suite.data_root), tmp_path)
    lines = _predict(str(model), ["BC6ENTC inhibits BC6ENTG in vitro.", "BC6ENTG was not affected by BC6ENTC."])
    for line in lines:
        labels = [entry["label"] for entry in line["labels"]]
        assert sorted(labels) == sorted(chemprot.labels) and line["predicted"] == labels[0]
        assert sum(entry["probability"] for entry in line["labels"]) == pytest.approx(1.0, abs=1e-3)

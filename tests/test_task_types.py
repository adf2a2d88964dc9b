"""A task type is one class behind the Task protocol, registered once: a toy task type defined in this
file alone goes through encode -> a training step -> predict -> score -> report, and into a plan."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from bioray.config import DatasetConfig
from bioray.tasks import catalog
from bioray.tasks.base import Task
from bioray.tasks.batching import pad_inputs


class MentionsDrugTask(Task):
    """Does a sentence mention a drug? (yes/no), scored by accuracy."""

    name, primary_metric, formats = "mentions_drug", "accuracy", ("tsv",)

    def parse_label(self, value, where: str) -> bool:
        return super().parse_label(value, where).lower() == "yes"

    def labels_of(self, example) -> list[str]:
        return []

    def label_list(self, *splits) -> list[str]:
        return ["no", "yes"]

    def build_model(self, encoder_dir: str, labels: list[str]):
        return AutoModelForSequenceClassification.from_pretrained(encoder_dir, num_labels=2, use_safetensors=True)

    def encode(self, examples, tokenizer, labels, max_length):
        encoded = tokenizer([e.text for e in examples], truncation=True, max_length=max_length)
        return [type("Feature", (), {"input_ids": ids, "token_type_ids": [0] * len(ids), "label": int(e.label)})()
                for ids, e in zip(encoded["input_ids"], examples)]

    def collate(self, features, pad_id):
        return {**pad_inputs(features, pad_id), "labels": torch.tensor([f.label for f in features])}

    @torch.no_grad()
    def predict(self, model, tokenizer, examples, labels, max_length, batch_size, device="cpu"):
        model.eval()
        batch = self.collate(self.encode(examples, tokenizer, labels, max_length), tokenizer.pad_token_id)
        return [bool(j) for j in model(**{k: v for k, v in batch.items() if k != "labels"}).logits.argmax(-1)]

    def score(self, examples, predictions, labels):
        return {"accuracy": sum(e.label == p for e, p in zip(examples, predictions)) / len(examples)}


@pytest.fixture
def toy_task():
    catalog.register_task(MentionsDrugTask.name, MentionsDrugTask)
    yield MentionsDrugTask.name
    catalog.TASK_TYPES.pop(MentionsDrugTask.name)


@pytest.fixture
def encoder(tmp_path) -> Path:
    from bioray.data.vocab import train_wordpiece
    from bioray.model.encoder import build_mlm_model

    texts = ["Aspirin lowers fever.", "The weather was mild.", "Metformin reduces glucose.", "We met at noon."] * 20
    tokenizer = train_wordpiece(texts, 120, lowercase=True, min_frequency=1)
    torch.manual_seed(0)
    build_mlm_model(len(tokenizer), tokenizer.pad_token_id, layers=1, hidden=32, heads=2, intermediate=64,
                    max_position=64, dropout=0.0).save_pretrained(str(tmp_path / "encoder"))
    tokenizer.save_pretrained(str(tmp_path / "encoder"))
    return tmp_path / "encoder"


def test_a_task_type_registered_from_outside_runs_end_to_end(toy_task, encoder, tmp_path):
    from bioray.tasks.report import build_report
    from bioray.tasks.splits import load_splits

    rows = "sentence\tlabel\nAspirin lowers fever.\tyes\nThe weather was mild.\tno\nMetformin reduces glucose.\tyes\n" \
           "We met at noon.\tno\n"
    (tmp_path / "toy.tsv").write_text(rows)
    dataset = DatasetConfig(name="toy", task=toy_task, train=str(tmp_path / "toy.tsv"), test=str(tmp_path / "toy.tsv"))
    assert catalog.entry_problems(dataset, "finetune.datasets[0]") == []
    splits = load_splits(dataset, Path)
    assert [e.label for e in splits["train"]] == [True, False, True, False]  # the task's own labels

    task = catalog.task_for(dataset)
    tokenizer = AutoTokenizer.from_pretrained(str(encoder))
    labels = task.label_list(splits["train"])
    model = task.build_model(str(encoder), labels)
    batch = task.collate(task.encode(splits["train"], tokenizer, labels, 32), tokenizer.pad_token_id)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(20):  # a training step, repeated until the four examples are learned
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    predictions = task.predict(model, tokenizer, splits["test"], labels, 32, 8)
    scores = task.score(splits["test"], predictions, labels)
    assert scores == {"accuracy": 1.0}

    metrics = {f"{toy_task}/test_{k}": v for k, v in scores.items()}
    report = build_report({"toy": {"task": toy_task, "metric": task.metric, "benchmark": None}},
                          [{"dataset": "toy", "seed": 1, "metrics": metrics}])
    (row,) = report["rows"]
    assert row["metric"] == "accuracy" and row["bioray"]["mean"] == 100.0  # the task's declared primary metric


def test_a_task_type_registered_from_outside_plans_as_any_other(toy_task, tmp_path, write_workflow, quickstart_tree):
    from bioray.pipeline.inputs import load_checked
    from bioray.pipeline.plan import build_plan, compute_keys

    (tmp_path / "toy.tsv").write_text("sentence\tlabel\nAspirin lowers fever.\tyes\n")
    quickstart_tree["finetune"]["datasets"].append({"name": "toy", "task": toy_task, "train": str(tmp_path / "toy.tsv"),
                                                    "test": str(tmp_path / "toy.tsv")})
    nodes = {n.name: n for n in build_plan(load_checked(write_workflow(quickstart_tree)))}
    tuned = nodes["finetune/toy/seed-42"]
    assert tuned.code == (__name__, "bioray.tasks.formats.table")  # its code key: its task type and its format
    assert "evaluate/toy/seed-42" in nodes["register"].inputs
    assert len(compute_keys(list(nodes.values()))) == len(nodes)

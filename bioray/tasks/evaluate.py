"""Evaluate stage: score a fine-tuned model on its test set with the task's paper metric."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer

from bioray.config import DatasetConfig, EvaluateConfig
from bioray.tasks.datasets import load_splits
from bioray.tasks.registry import task_for


def _details(task, test: list, predictions: list) -> str:
    """A per-class breakdown where the task has one (NER: seqeval's report)."""
    if task.kind == "ner":
        from bioray.tasks.ner import entity_report
        return f"```\n{entity_report([s.tags for s in test], predictions)}\n```\n"
    return ""


def _prediction_rows(task, test: list, predictions: list) -> list[dict]:
    if task.kind == "ner":
        return [{"words": s.words, "gold": s.tags, "predicted": p} for s, p in zip(test, predictions)]
    if task.kind == "qa_factoid":
        return [{"id": q.qid, "gold": q.answers, "predicted": p} for q, p in zip(test, predictions)]
    return [{"text": e.text[:200], "gold": e.label, "predicted": p} for e, p in zip(test, predictions)]


def run_evaluate(config: EvaluateConfig, dataset: DatasetConfig, *, model_dir: Path, data_root: Path,
                 fold: int | None, max_length: int, output: Path) -> dict:
    task = task_for(dataset)
    test = load_splits(dataset, lambda p: data_root / p, fold)["test"]
    labels = json.loads((model_dir.parent / "labels.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = task.build_model(str(model_dir), labels)
    predictions = task.predict(model, tokenizer, test, labels, max_length, config.batch_size)
    scores = task.score(test, predictions, labels)
    where = f", fold {fold + 1}" if fold is not None else ""
    table = " | ".join(scores) + "\n|" + "---|" * len(scores) + "\n| " + " | ".join(f"{v:.4f}" for v in scores.values())
    report = (f"# {dataset.name}{where}: {dataset.task} test set ({len(test)} examples)\n\n"
              f"Primary metric: {task.primary}\n\n| {table} |\n\n{_details(task, test, predictions)}")
    (output / "report.md").write_text(report)
    (output / "scores.json").write_text(json.dumps(scores, indent=2))
    with open(output / "predictions.jsonl", "w") as stream:
        for row in _prediction_rows(task, test, predictions):
            stream.write(json.dumps(row) + "\n")
    return {f"{dataset.task}/test_{k}": float(v) for k, v in scores.items()}

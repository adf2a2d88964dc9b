"""Evaluate stage: score a fine-tuned model on its test set with the task's paper metric."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoModelForTokenClassification, AutoTokenizer

from bioray.config import DatasetConfig, EvaluateConfig
from bioray.tasks.ner import entity_report, entity_scores, predict_tags, read_conll


def run_evaluate(config: EvaluateConfig, dataset: DatasetConfig, *, model_dir: Path, test_file: Path,
                 max_length: int, output: Path) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForTokenClassification.from_pretrained(str(model_dir))
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    test = read_conll(test_file)
    predicted = predict_tags(model, tokenizer, test, labels, max_length, config.batch_size)
    gold = [s.tags for s in test]
    scores = entity_scores(gold, predicted)
    report = (f"# {dataset.name} — NER test set ({len(test)} sentences)\n\n"
              f"Entity-level exact match (seqeval, conlleval semantics)\n\n"
              f"| precision | recall | F1 |\n|---|---|---|\n"
              f"| {scores['precision']:.4f} | {scores['recall']:.4f} | {scores['f1']:.4f} |\n\n"
              f"```\n{entity_report(gold, predicted)}\n```\n")
    (output / "report.md").write_text(report)
    (output / "scores.json").write_text(json.dumps(scores, indent=2))
    return {f"ner/test_{k}": float(v) for k, v in scores.items()}

"""Evaluate stage: score a fine-tuned model on its test set with the task's paper metric."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer

from bioray.metric_names import SUBWORDS_PER_WORD, test_score
from bioray.tasks.examples import example_words


def run_evaluate(task, test: list, *, model_dir: Path, labels: list[str], max_length: int, batch_size: int,
                 output: Path, title: str) -> dict:
    """Predict the test examples with the model, score them; write report.md, scores.json and
    predictions.jsonl. Returns `<task>/test_<metric>` metrics."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = task.build_model(str(model_dir), labels)
    predictions = task.predict(model, tokenizer, test, labels, max_length, batch_size)
    scores = task.score(test, predictions, labels)
    table = " | ".join(scores) + "\n|" + "---|" * len(scores) + "\n| " + " | ".join(f"{v:.4f}" for v in scores.values())
    report = (f"# {title}: {task.name} test set ({len(test)} examples)\n\n"
              f"Primary metric: {task.metric}\n\n| {table} |\n\n{task.details(test, predictions)}")
    (output / "report.md").write_text(report)
    (output / "scores.json").write_text(json.dumps(scores, indent=2))
    with open(output / "predictions.jsonl", "w") as stream:
        for row in task.prediction_rows(test, predictions):
            stream.write(json.dumps(row) + "\n")
    return {**{test_score(task.name, k): float(v) for k, v in scores.items()},
            SUBWORDS_PER_WORD: subwords_per_word(tokenizer, test)}


def subwords_per_word(tokenizer, examples: list) -> float:
    """Word pieces per word of the examples' text under this vocabulary (1.0: every word is one piece)."""
    words = [word for example in examples for word in example_words(example)]
    if not words:
        return float("nan")
    pieces = tokenizer(words, add_special_tokens=False)["input_ids"]
    return sum(len(p) for p in pieces) / len(words)

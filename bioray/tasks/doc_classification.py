"""Multi-label document classification (HoC): a sigmoid per class, micro-F1 over (document, class)
decisions (BLURB) and example-based F1 (BLUE)."""

from __future__ import annotations

import torch

from bioray.tasks.metrics import multilabel_scores
from bioray.tasks.sequence import SequenceTask


class DocClassificationTask(SequenceTask):
    name, primary_metric, metrics, formats = "doc_classification", "micro_f1", ("example_f1",), ("tsv", "jsonl", "hoc")
    problem_type = "multi_label_classification"

    def parse_label(self, value, where: str) -> list[str]:
        """One label, or several (a list: in JSON, or split by the format's `label_separator`); an empty
        set is allowed."""
        parts = value if isinstance(value, list) else [super().parse_label(value, where)]
        return sorted({str(p).strip() for p in parts if str(p).strip()})

    def labels_of(self, example) -> list[str]:
        return example.label

    def target(self, example, index: dict[str, int]) -> list[float]:
        return [1.0 if label in example.label else 0.0 for label in index]

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def decide(self, outputs: torch.Tensor, labels: list[str]) -> list[list[str]]:
        return [[labels[j] for j in range(len(labels)) if row[j] >= 0.5] for row in outputs]

    def score(self, examples, predictions, labels) -> dict[str, float]:
        return multilabel_scores([e.label for e in examples], predictions, labels)

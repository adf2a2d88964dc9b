"""Sentence-pair similarity as regression on the [CLS] representation (BIOSSES), Pearson r."""

from __future__ import annotations

import torch

from bioray.tasks.examples import DatasetError
from bioray.tasks.metrics import similarity_scores
from bioray.tasks.sequence import SequenceTask


class SimilarityTask(SequenceTask):
    name, primary_metric, formats = "similarity", "pearson", ("tsv", "jsonl")
    problem_type = "regression"

    def parse_label(self, value, where: str) -> float:
        value = super().parse_label(value, where)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: expected a numeric score, got {value!r}") from None

    def labels_of(self, example) -> list[str]:
        return []  # a score, not a class

    def label_list(self, *splits) -> list[str]:
        return []

    def target(self, example, index: dict[str, int]) -> float:
        return float(example.label)

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def decide(self, outputs: torch.Tensor, labels: list[str]) -> list[float]:
        return outputs[:, 0].tolist()

    def score(self, examples, predictions, labels) -> dict[str, float]:
        return similarity_scores([e.label for e in examples], predictions)

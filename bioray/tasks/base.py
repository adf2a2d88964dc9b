"""The Task protocol: what a task type knows. One class per task type (bioray.tasks.ner, relation,
similarity, doc_classification, qa_yesno, qa_factoid, qa_list), registered once in bioray.tasks.catalog.

A task type turns examples into model inputs and back: its labels, its Hugging Face head, encoding
and batching, prediction, and the paper metric it is scored by: `primary_metric`, or the one of
`metrics` an entry chooses with `metric:` (`Task.metric`: what dev selection, the report and the
promotion gate rank by).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from bioray.constants import IGNORE_INDEX
from bioray.tasks.examples import DatasetError


class Task(ABC):
    name: ClassVar[str]  # its key in bioray.tasks.catalog and the `task:` of a dataset entry
    primary_metric: ClassVar[str]  # the key of score() ranked by unless the entry chooses another
    metrics: ClassVar[tuple[str, ...]] = ()  # the other keys of score() an entry's `metric:` may choose
    formats: ClassVar[tuple[str, ...]]  # the file formats it reads; the first is the default

    def __init__(self, dataset):
        self.dataset = dataset

    @property
    def metric(self) -> str:
        """The score this entry is ranked and reported by."""
        return getattr(self.dataset, "metric", None) or self.primary_metric

    @classmethod
    def entry_problems(cls, dataset) -> list[str]:
        """Keys of an entry that do not fit this task type, as `key: problem` lines."""
        chosen = getattr(dataset, "metric", None)
        offered = (cls.primary_metric, *cls.metrics)
        if chosen is not None and chosen not in offered:
            return [f"metric: {chosen!r} is not a metric of task {cls.name!r} (expected one of {list(offered)})"]
        return []

    # --- labels -------------------------------------------------------------------------------

    def parse_label(self, value: Any, where: str) -> Any:
        """A label as a format read it -> this task's kind of label (default: the class name)."""
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DatasetError(f"{where}: missing label")
        return value.strip() if isinstance(value, str) else value

    def labels_of(self, example) -> list[str]:
        """The class names an example carries (checked against the entry's `labels`)."""
        return [example.label]

    @abstractmethod
    def label_list(self, *splits: list) -> list[str]:
        """The classes the head predicts (the entry's own list, else every label seen)."""

    def split_problems(self, splits: dict[str, list]) -> list[str]:
        """What makes read splits unusable for this task (validation, before any stage runs): by default,
        a classifier whose training set shows fewer than two classes."""
        seen = sorted({label for example in splits["train"] for label in self.labels_of(example)})
        if self.label_list(splits["train"]) and len(seen) < 2:
            return [f"{self.dataset.name}: the training set has fewer than two classes ({seen}); nothing to learn"]
        return []

    # --- model ----------------------------------------------------------------------------------

    @abstractmethod
    def build_model(self, encoder_dir: str, labels: list[str]):
        """The encoder with this task's Hugging Face head."""

    @abstractmethod
    def encode(self, examples: list, tokenizer, labels: list[str], max_length: int) -> list:
        """Examples -> model inputs (features) with their training targets."""

    @abstractmethod
    def collate(self, features: list, pad_id: int) -> dict:
        """A batch of features -> tensors (dynamic padding), `labels` (or positions) included; every
        tensor with the batch first (each fine-tuning worker takes its rows of a global batch)."""

    def loss_terms(self, batch: dict) -> int:
        """How many terms the head's mean loss averages over in a collated batch: fine-tuning weighs each
        worker's mean by it, so the loss is the mean over the global batch. For Hugging Face's heads:
        integer labels that are not IGNORE_INDEX (tokens for token classification, examples for
        classification), every element of float labels (regression, multi-label), else the examples
        (extractive QA's start and end positions)."""
        labels = batch.get("labels")
        if labels is None:
            return int(next(iter(batch.values())).shape[0])
        if labels.is_floating_point():
            return labels.numel()
        return int((labels != IGNORE_INDEX).sum())

    @abstractmethod
    def predict(self, model, tokenizer, examples: list, labels: list[str], max_length: int, batch_size: int,
                device="cpu") -> list:
        """One prediction per example, in the form `score` compares with the gold labels."""

    @abstractmethod
    def score(self, examples: list, predictions: list, labels: list[str]) -> dict[str, float]:
        """The paper metric(s) on a 0-1 scale; `primary_metric` and `metrics` are among the keys."""

    # --- evaluation outputs ---------------------------------------------------------------------

    def details(self, examples: list, predictions: list) -> str:
        """A per-class breakdown for the evaluation report (markdown), where the task has one."""
        return ""

    def prediction_rows(self, examples: list, predictions: list) -> list[dict]:
        """The test set's predictions, one JSON-able row each (`predictions.jsonl`)."""
        return [{"text": e.text[:200], "gold": e.label, "predicted": p} for e, p in zip(examples, predictions)]

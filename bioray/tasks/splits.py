"""A dataset entry's examples, split by split: its format reads the files, its task type makes the
labels its own, and the entry's label list and training-set cap apply. Stages read them once."""

from __future__ import annotations

from pathlib import Path

from bioray.tasks.examples import DatasetError
from bioray.tasks.formats.base import Resolve
from bioray.tasks.registry import format_for, task_for


def dataset_files(dataset, resolve: Resolve) -> list[Path]:
    """Every file or folder an entry reads (the missing-file check, the stage keys' fingerprints)."""
    return format_for(dataset).files(dataset, resolve)


def load_splits(dataset, resolve: Resolve, fold: int | None = None) -> dict[str, list]:
    """train / dev (when there is one) / test examples of a registry entry (of one fold for k-fold entries)."""
    task = task_for(dataset)
    splits = format_for(dataset).splits(dataset, resolve, fold)
    for examples in splits.values():
        for example in examples:
            if hasattr(example, "label"):
                example.label = task.parse_label(example.label, example.where)
    if dataset.max_train_examples:
        splits["train"] = splits["train"][: dataset.max_train_examples]
    if dataset.labels:
        for examples in splits.values():
            _check_labels(examples, dataset.labels, task)
    return splits


def _check_labels(examples: list, known: list[str], task) -> None:
    """An entry that lists its labels (NER tags or classes) accepts no other."""
    for example in examples:
        for label in task.labels_of(example):
            if label not in known:
                raise DatasetError(f"{example.where}: unknown label {label!r} (expected one of {known})")

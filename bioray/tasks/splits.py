"""A dataset entry's examples, split by split: its format reads the files, its task type makes the
labels its own, and the entry's label list and training-set cap apply. Stages read them once."""

from __future__ import annotations

from pathlib import Path

from bioray.tasks.catalog import format_for, task_for
from bioray.tasks.examples import DatasetError
from bioray.tasks.formats.base import Resolve


def dataset_files(dataset, resolve: Resolve) -> list[Path]:
    """Every file or folder an entry reads (the missing-file check, the stage keys' fingerprints)."""
    return format_for(dataset).files(dataset, resolve)


def load_splits(dataset, resolve: Resolve, fold: int | None = None) -> dict[str, list]:
    """train / dev (when there is one) / test examples of a dataset entry (of one fold for k-fold entries)."""
    task = task_for(dataset)
    splits = format_for(dataset).splits(dataset, resolve, fold)
    for examples in splits.values():
        for example in examples:
            if hasattr(example, "label"):
                example.label = task.parse_label(example.label, example.where)
    if dataset.max_train_examples:
        splits["train"] = splits["train"][: dataset.max_train_examples]
    if dataset.labels:
        _check_labels([e for examples in splits.values() for e in examples], dataset.labels, task)
    return splits


def dataset_problems(dataset, resolve: Resolve) -> list[str]:
    """Everything wrong with an entry's data, read as the stages will read it (every split of every
    fold), as lines naming file and line (or JSON path): what `bioray validate` and `run` check first."""
    problems = []
    for fold in range(len(dataset.folds)) if dataset.folds else [None]:
        where = f"fold {fold + 1}: " if fold is not None else ""
        try:
            splits = load_splits(dataset, resolve, fold)
            problems += [f"{where}{p}" for p in task_for(dataset).split_problems(splits)]
        except DatasetError as exc:
            problems += [f"{where}{line}" for line in str(exc).splitlines()]
    return problems


def _check_labels(examples: list, known: list[str], task, shown: int = 10) -> None:
    """An entry that lists its labels (NER tags or classes) accepts no other; each unknown label is
    named once, where it first occurs."""
    unknown: dict[str, str] = {}
    for example in examples:
        for label in task.labels_of(example):
            if label not in known and label not in unknown:
                unknown[label] = f"{example.where}: unknown label {label!r} (expected one of {known})"
    if unknown:
        lines = list(unknown.values())
        more = [f"... and {len(lines) - shown} more unknown labels"] if len(lines) > shown else []
        raise DatasetError("\n".join(lines[:shown] + more))

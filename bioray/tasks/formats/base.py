"""What a dataset format does: declare the entry keys only it reads (its options), name the files an
entry reads, and read them into train/dev/test."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from bioray.tasks.examples import DatasetError

Resolve = Callable[[str], Path]  # a path of the entry, resolved against the data root


class FormatOptions(BaseModel):
    """The keys of a dataset entry that only its format reads (beside bioray.config.DatasetConfig's
    common keys). A format declares its own subclass as `Options`; the workflow's entries are validated
    against it when the workflow is loaded, so a key the format does not take is an error there."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    file_keys: ClassVar[tuple[str, ...]] = ()  # options naming a file under finetune.data_root (must exist)


class Split(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dev: float = Field(0.1, ge=0, lt=1, description="Fraction for the development set.")
    test: float = Field(0.2, ge=0, lt=1, description="Fraction for the test set (when the format has no test file).")
    seed: int = Field(0, description="Shuffle seed.")


class SplitOptions(FormatOptions):
    """Formats without an official split: a seeded shuffle of the document ids cut into parts."""

    split: Split = Field(default_factory=Split, description="Split of formats without an official one.")


class Format(ABC):
    """One dataset file format, with its entry's options."""

    Options: ClassVar[type[FormatOptions]] = FormatOptions
    tasks: ClassVar[tuple[str, ...]] = ()  # task types it reads for, beside those listing it in their `formats`

    def __init__(self, options: FormatOptions | None = None):
        self.options = options if options is not None else self.Options()

    @abstractmethod
    def files(self, dataset, resolve: Resolve) -> list[Path]:
        """Every file or folder the entry reads (for the missing-file check and the stage keys)."""

    @abstractmethod
    def splits(self, dataset, resolve: Resolve, fold: int | None = None) -> dict[str, list]:
        """The entry's examples by split (`train`, `dev` when there is one, `test`), of one fold."""

    def entry_problems(self, dataset) -> list[str]:
        """Keys the entry must (not) set for this format, as `key: problem` lines."""
        return []


class PerFileFormat(Format):
    """Formats with a file per split (train/dev/test), or k folds of `train.tsv` and `test.tsv`."""

    @abstractmethod
    def read(self, path: Path, dataset) -> list:
        """The examples of one file; errors name the file and line."""

    def entry_problems(self, dataset) -> list[str]:
        if dataset.folds:
            return ["folds: k-fold entries take their files from `folds`, not train/test"] \
                if dataset.train or dataset.test else []
        if not (dataset.train and dataset.test):
            return ["train: set `train` and `test` files (or `folds`)"]
        return []

    def files(self, dataset, resolve: Resolve) -> list[Path]:
        if dataset.folds:
            return [resolve(fold) / f"{split}.tsv" for fold in dataset.folds for split in ("train", "test")]
        return [resolve(name) for name in (dataset.train, dataset.dev, dataset.test) if name]

    def splits(self, dataset, resolve: Resolve, fold: int | None = None) -> dict[str, list]:
        if dataset.folds:
            directory = resolve(dataset.folds[fold or 0])
            paths = {split: directory / f"{split}.tsv" for split in ("train", "test")}
        else:
            paths = {split: resolve(getattr(dataset, split)) for split in ("train", "dev", "test")
                     if getattr(dataset, split)}
        return read_each({split: (lambda path=path: self.read(path, dataset)) for split, path in paths.items()})


def read_each(readers: dict[str, Callable[[], list]]) -> dict[str, list]:
    """Every split read, even after one fails: one error listing each split's problem (validation
    reports everything wrong with a dataset at once)."""
    splits, problems = {}, []
    for split, read in readers.items():
        try:
            splits[split] = read()
        except DatasetError as exc:
            problems.append(str(exc))
    if problems:
        raise DatasetError("\n".join(problems))
    return splits


def require_file(path: Path) -> None:
    """A readable, non-empty file; a directory or a missing or empty file says which it is."""
    if path.is_dir():
        raise DatasetError(f"{path}: a directory, where a file was expected")
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: empty file")


def split_ids(ids: list[str], fractions: dict[str, float], seed: int) -> dict[str, list[str]]:
    """A seeded shuffle of sorted ids cut into named parts (the rest is `train`), for datasets
    without an official split (HoC, PubMedQA's training pool)."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    parts, start = {}, 0
    for name, fraction in fractions.items():
        count = round(len(order) * fraction)
        parts[name] = order[start:start + count]
        start += count
    parts["train"] = order[start:]
    return parts

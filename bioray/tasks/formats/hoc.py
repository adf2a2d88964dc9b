"""Hallmarks of Cancer (the original release): text/PMID.txt (a sentence per line) and labels/PMID.txt
(per sentence, `<`-terminated, `AND`-joined `--` paths). One example per abstract; its labels are the
top-level hallmarks of all its sentences (BLUE/BLURB). No official split: a seeded split by PMID."""

from __future__ import annotations

from pathlib import Path

from bioray.tasks.examples import DatasetError, Example
from bioray.tasks.formats.base import Format, Resolve, SplitOptions, split_ids

HALLMARKS = [
    "Activating invasion and metastasis", "Avoiding immune destruction", "Cellular energetics",
    "Enabling replicative immortality", "Evading growth suppressors", "Genomic instability and mutation",
    "Inducing angiogenesis", "Resisting cell death", "Sustaining proliferative signaling",
    "Tumor promoting inflammation",
]


def read_hoc(directory: Path) -> list[tuple[str, Example]]:
    texts = directory / "text"
    if not texts.is_dir() or not (directory / "labels").is_dir():
        raise DatasetError(f"{directory}: expected the HoC folders text/ and labels/")
    documents = []
    for text_file in sorted(texts.glob("*.txt")):
        label_file = directory / "labels" / text_file.name
        if not label_file.is_file():
            raise DatasetError(f"{label_file}: missing (every text/ file needs its labels/ file)")
        labels = set()
        for segment in label_file.read_text(encoding="utf-8").split("<"):
            for path in segment.split("AND"):
                top = path.split("--")[0].strip()
                if top in HALLMARKS:
                    labels.add(top)
                elif top and top != "NULL":
                    raise DatasetError(f"{label_file}: unknown hallmark {top!r}")
        text = " ".join(line.strip() for line in text_file.read_text(encoding="utf-8").splitlines() if line.strip())
        documents.append((text_file.stem, Example(text, None, sorted(labels), str(text_file))))
    if not documents:
        raise DatasetError(f"{texts}: no abstracts")
    return documents


class HocFormat(Format):
    Options = SplitOptions

    def entry_problems(self, dataset) -> list[str]:
        return [] if dataset.path else ["path: format 'hoc' reads one folder: set `path`"]

    def files(self, dataset, resolve: Resolve) -> list[Path]:
        return [resolve(dataset.path)]

    def splits(self, dataset, resolve: Resolve, fold: int | None = None) -> dict[str, list]:
        documents = dict(read_hoc(resolve(dataset.path)))
        split = self.options.split
        parts = split_ids(list(documents), {"dev": split.dev, "test": split.test}, split.seed)
        return {name: [documents[i] for i in ids] for name, ids in parts.items()}

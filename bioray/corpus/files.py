"""Which files on disk belong to a source, by format."""

from __future__ import annotations

import glob
from pathlib import Path

SUFFIXES = {
    "text": (".txt", ".txt.gz"),
    "jsonl": (".jsonl", ".jsonl.gz"),
    "medline": (".xml", ".xml.gz"),
    "pmc": (".nxml", ".xml", ".tar.gz"),
}


def list_source_files(path: Path, fmt: str) -> list[Path]:
    """A file, every matching file under a directory, or a glob's matches; sorted by name.

    Sorting matters: PubMed update files are named in publication order, so a later file's
    record of a PMID replaces an earlier one's.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        candidates = [p for p in path.rglob("*") if p.is_file()]
    else:
        candidates = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
    return sorted(p for p in candidates if p.name.endswith(SUFFIXES[fmt]))

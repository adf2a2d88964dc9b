"""One entry point from (file, format) to document records.

Readers yield a `Document` per document and a `Quarantined` per record they cannot use (bad encoding,
missing id, no text), and go on with the next record: one bad record never costs the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from bioray.corpus.medline import read_medline
from bioray.corpus.pmc import read_pmc
from bioray.corpus.records import Document, Quarantined
from bioray.corpus.text import read_jsonl, read_text_blocks, read_text_lines


def read_documents(path: Path, fmt: str, source: str, text_field: str = "text", id_field: str = "id",
                   documents: str = "line") -> Iterator[Document | Quarantined]:
    if fmt == "medline":
        return read_medline(path, source)
    if fmt == "pmc":
        return read_pmc(path, source)
    if fmt == "text":
        return read_text_blocks(path, source) if documents == "blank_line" else read_text_lines(path, source)
    if fmt == "jsonl":
        return read_jsonl(path, source, text_field, id_field)
    raise ValueError(f"unknown source format {fmt!r}")

"""Plain text (one document per line) and JSON Lines corpora."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if str(path).endswith(".gz") else open(path, encoding="utf-8")


def read_text_lines(path: Path, source: str) -> Iterator[dict]:
    """One document per non-empty line; the id is the file name and line number."""
    with _open_text(path) as stream:
        for line_no, line in enumerate(stream, start=1):
            text = line.strip()
            if text:
                yield {"source": source, "doc_id": f"{source}:{path.name}:{line_no}", "version": 1,
                       "text": text, "metadata": "{}", "deleted": False}


def read_jsonl(path: Path, source: str, text_field: str = "text", id_field: str = "id") -> Iterator[dict]:
    with _open_text(path) as stream:
        for line_no, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            if text_field not in row:
                raise ValueError(f"{path}:{line_no}: no field {text_field!r}")
            doc_id = row.get(id_field, f"{path.name}:{line_no}")
            meta = {k: v for k, v in row.items() if k not in (text_field, id_field)}
            yield {"source": source, "doc_id": f"{source}:{doc_id}", "version": 1, "text": row[text_field],
                   "metadata": json.dumps(meta), "deleted": False}

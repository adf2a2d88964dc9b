"""Plain text (one document per line) and JSON Lines corpora."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from bioray.corpus.records import Document, Quarantined

# A line longer than this is a file without line breaks (or a dump of something else), not a
# document: it is skipped in bounded chunks instead of being read into memory whole.
MAX_LINE_BYTES = 32 * 2**20


def _lines(path: Path) -> Iterator[tuple[int, str | Quarantined]]:
    """Numbered lines, decoded one by one so that a non-UTF-8 line is quarantined alone."""
    with (gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")) as stream:
        line_no = 0
        while raw := stream.readline(MAX_LINE_BYTES + 1):
            line_no += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                length = len(raw)
                del raw
                while (chunk := stream.readline(2**20)) and not chunk.endswith(b"\n"):
                    length += len(chunk)
                length += len(chunk)
                yield line_no, Quarantined(f"line {line_no}", f"a line of {length} bytes, over the "
                                           f"{MAX_LINE_BYTES // 2**20} MiB a document may have (no line breaks?)")
                continue
            try:
                yield line_no, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield line_no, Quarantined(f"line {line_no}", f"not UTF-8: byte {raw[exc.start]:#04x} at column "
                                                              f"{exc.start + 1}")


def read_text_lines(path: Path, source: str) -> Iterator[Document | Quarantined]:
    """One document per non-empty line; the id is the file name and line number."""
    for line_no, line in _lines(path):
        if isinstance(line, Quarantined):
            yield line
        elif line.strip():
            yield Document(source, f"{source}:{path.name}:{line_no}", 1, line.strip())


def read_text_blocks(path: Path, source: str) -> Iterator[Document | Quarantined]:
    """One document per blank-line separated block; the id is the file name and first line number."""
    block, first = [], 0
    for line_no, line in [*_lines(path), (0, "")]:  # a final empty line closes the last block
        if isinstance(line, Quarantined):
            yield line
            continue
        if line.strip():
            first = first or line_no
            block.append(line.strip())
        elif block:
            yield Document(source, f"{source}:{path.name}:{first}", 1, "\n".join(block))
            block, first = [], 0


def read_jsonl(path: Path, source: str, text_field: str = "text",
               id_field: str = "id") -> Iterator[Document | Quarantined]:
    for line_no, line in _lines(path):
        if isinstance(line, Quarantined):
            yield line
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Quarantined(f"line {line_no}", f"not valid JSON ({exc.msg})")
            continue
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str) or not row[text_field].strip():
            yield Quarantined(f"line {line_no}", f"no text in field {text_field!r}")
            continue
        doc_id = row.get(id_field, f"{path.name}:{line_no}")
        meta = {k: v for k, v in row.items() if k not in (text_field, id_field)}
        yield Document(source, f"{source}:{doc_id}", 1, row[text_field], json.dumps(meta))

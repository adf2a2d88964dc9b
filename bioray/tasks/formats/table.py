"""Tab-separated and JSON Lines files of sequence-level examples: a text (and a second text of a pair)
and a label column, named by the entry's options (`text_column`, `text_b_column`, `label_column`,
`columns`); several labels in one cell joined by `label_separator`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from pydantic import Field

from bioray.tasks.examples import DatasetError, Example
from bioray.tasks.formats.base import FormatOptions, PerFileFormat, require_file

csv.field_size_limit(1 << 24)  # PubMedQA-sized cells


class TableOptions(FormatOptions):
    text_column: str = Field("sentence", description="The text column.")
    text_b_column: str | None = Field(None, description="The second text of a pair (similarity).")
    label_column: str = Field("label", description="The label (or score) column.")
    label_separator: str | None = Field(None, description="Separator of several labels in one cell "
                                        "(doc_classification).")


class TsvOptions(TableOptions):
    columns: list[str] | None = Field(None, description="Files without a header row: their column names, in order.")


def _tsv_rows(path: Path, options: TsvOptions) -> list[tuple[int, dict]]:
    """Rows as dicts (a quoted cell may hold tabs, as in BIOSSES). The first row is a header when it
    names the text and label columns; a file without one (BioBERT/BLUE style) takes its column
    names from the entry's `columns`. Row numbers are records (a quoted cell may span lines)."""
    with open(path, encoding="utf-8", newline="") as stream:
        rows = [(n, r) for n, r in enumerate(csv.reader(stream, delimiter="\t"), start=1)
                if any(cell.strip() for cell in r)]
    if not rows:
        raise DatasetError(f"{path}: no rows")
    first = rows[0][1]
    if options.text_column in first and options.label_column in first:
        names, rows = first, rows[1:]
    elif options.columns:
        names = options.columns
    else:
        raise DatasetError(f"{path}:1: no header row naming {options.text_column!r} and {options.label_column!r}; "
                           f"for a file without a header, list its column names in `columns`")
    parsed = []
    for line_no, row in rows:
        if len(row) != len(names):
            raise DatasetError(f"{path}:{line_no}: expected {len(names)} tab-separated columns {names}, got {len(row)}")
        parsed.append((line_no, dict(zip(names, row))))
    return parsed


def _jsonl_rows(path: Path) -> list[tuple[int, dict]]:
    rows = []
    with open(path, encoding="utf-8") as stream:
        for line_no, line in enumerate(stream, start=1):
            if line.strip():
                try:
                    rows.append((line_no, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}:{line_no}: not JSON ({exc.msg})") from None
    return rows


def read_table(path: Path, options: TableOptions) -> list[Example]:
    """Examples with the label as written, or its parts (the task type turns it into its own kind of label)."""
    require_file(path)
    rows = _tsv_rows(path, options) if isinstance(options, TsvOptions) else _jsonl_rows(path)
    examples = []
    wanted = [c for c in (options.text_column, options.text_b_column, options.label_column) if c]
    for line_no, row in rows:
        where = f"{path}:{line_no}"
        missing = [c for c in wanted if c not in row]
        if missing:
            raise DatasetError(f"{where}: no column {missing[0]!r} (has {sorted(row)})")
        text = str(row[options.text_column])
        if not text.strip():
            raise DatasetError(f"{where}: empty text in column {options.text_column!r}")
        text_b = str(row[options.text_b_column]) if options.text_b_column else None
        label = row[options.label_column]
        if options.label_separator and isinstance(label, str):
            label = label.split(options.label_separator)
        examples.append(Example(text, text_b, label if isinstance(label, list) else str(label), where))
    if not examples:
        raise DatasetError(f"{path}: no examples")
    return examples


class TsvFormat(PerFileFormat):
    Options = TsvOptions

    def read(self, path: Path, dataset) -> list[Example]:
        return read_table(path, self.options)


class JsonlFormat(PerFileFormat):
    Options = TableOptions

    def read(self, path: Path, dataset) -> list[Example]:
        return read_table(path, self.options)

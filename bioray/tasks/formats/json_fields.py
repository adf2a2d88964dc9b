"""Reading nested JSON dataset files so that a bad field fails with the file, the field's JSON path and
what was expected (`file.json: questions[12].exact_answer: expected ..., got ...`), not a KeyError
from deep inside training."""

from __future__ import annotations

import json
from pathlib import Path

from bioray.tasks.examples import DatasetError
from bioray.tasks.formats.base import require_file


def load_json(path: Path, what: str):
    """The parsed file; a file that is not JSON says where it breaks."""
    require_file(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not {what} (not UTF-8 text: {exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not {what} ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def shown(value) -> str:
    """A value as the file writes it, cut short for a message."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def is_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def field(record: dict, key: str, where: str, expected: str, check) -> object:
    """record[key], which `check` must accept; `where` is the record's own path (`file: questions[3]`)."""
    if key not in record:
        raise DatasetError(f"{where}.{key}: missing; expected {expected}")
    value = record[key]
    if not check(value):
        raise DatasetError(f"{where}.{key}: expected {expected}, got {shown(value)}")
    return value


def records(value, where: str, what: str) -> list[dict]:
    """A list of JSON objects (questions, snippets, paragraphs), each checked to be an object."""
    if not isinstance(value, list):
        raise DatasetError(f"{where}: expected a list of {what}, got {shown(value)}")
    for i, record in enumerate(value):
        if not isinstance(record, dict):
            raise DatasetError(f"{where}[{i}]: expected an object (one of the {what}), got {shown(record)}")
    return value

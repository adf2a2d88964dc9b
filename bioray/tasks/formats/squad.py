"""SQuAD-format JSON (BioASQ factoid as BioBERT distributes it): data / paragraphs / qas."""

from __future__ import annotations

import json
from pathlib import Path

from bioray.tasks.examples import DatasetError, QAExample
from bioray.tasks.formats.base import PerFileFormat, require_file


def read_squad(path: Path) -> list[QAExample]:
    require_file(path)
    try:
        tree = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not SQuAD-format JSON ({exc})") from None
    examples = []
    for a, article in enumerate(tree.get("data", [])):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            context = paragraph.get("context", "")
            for q, qa in enumerate(paragraph.get("qas", [])):
                where = f"{path}: data[{a}].paragraphs[{p}].qas[{q}]"
                answers = qa.get("answers", [])
                for answer in answers:
                    start = answer.get("answer_start", -1)
                    if context[start:start + len(answer.get("text", ""))] != answer.get("text"):
                        raise DatasetError(f"{where}: answer {answer.get('text')!r} is not at offset {start} of the "
                                           f"context")
                examples.append(QAExample(str(qa.get("id", where)), qa["question"], context,
                                          [x["text"] for x in answers], [x["answer_start"] for x in answers], where))
    if not examples:
        raise DatasetError(f"{path}: no questions")
    return examples


class SquadFormat(PerFileFormat):
    def read(self, path: Path, dataset) -> list[QAExample]:
        return read_squad(path)

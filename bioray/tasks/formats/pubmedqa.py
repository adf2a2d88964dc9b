"""PubMedQA PQA-L (`ori_pqal.json`: question + contexts -> yes/no/maybe, by PMID) with its test
ground truth (`test_ground_truth.json`); the rest is the training pool, split by a seeded shuffle."""

from __future__ import annotations

import json
from pathlib import Path

from bioray.tasks.examples import DatasetError, Example
from bioray.tasks.formats.base import Format, Resolve, SplitOptions, require_file, split_ids


def read_pubmedqa(path: Path) -> dict[str, Example]:
    require_file(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a PubMedQA JSON file ({exc})") from None
    examples = {}
    for pmid, record in records.items():
        where = f"{path}: question {pmid}"
        try:
            examples[pmid] = Example(record["QUESTION"], " ".join(record["CONTEXTS"]), record["final_decision"], where)
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"{where}: missing field {exc}") from None
    return examples


class PubmedqaFormat(Format):
    Options = SplitOptions

    def entry_problems(self, dataset) -> list[str]:
        problems = [] if dataset.path else ["path: format 'pubmedqa' reads ori_pqal.json: set `path`"]
        return problems + ([] if dataset.test else ["test: format 'pubmedqa' needs the test ground-truth JSON"])

    def files(self, dataset, resolve: Resolve) -> list[Path]:
        return [resolve(dataset.path), resolve(dataset.test)]

    def splits(self, dataset, resolve: Resolve, fold: int | None = None) -> dict[str, list]:
        questions = read_pubmedqa(resolve(dataset.path))
        truth_file = resolve(dataset.test)
        require_file(truth_file)
        truth = json.loads(truth_file.read_text(encoding="utf-8"))
        unknown = sorted(set(truth) - set(questions))
        if unknown:
            raise DatasetError(f"{truth_file}: question {unknown[0]} is not in {dataset.path}")
        split = self.options.split
        pool = split_ids([q for q in questions if q not in truth], {"dev": split.dev}, split.seed)
        splits = {name: [questions[i] for i in ids] for name, ids in pool.items()}
        splits["test"] = [Example(questions[q].text, questions[q].text_b, answer, f"{truth_file}: question {q}")
                          for q, answer in sorted(truth.items())]
        return splits

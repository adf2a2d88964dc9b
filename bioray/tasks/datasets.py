"""Downstream dataset loaders: the standard file formats -> examples, with errors naming file and line.

A registry entry (`finetune.datasets[]`) names a task type, a format and its files; the loaders here
turn them into examples: `Sentence` (NER, from ner.py), `Example` (sentence/pair classification and
regression) or `QAExample` (extractive QA). Datasets without an official split (HoC; PubMedQA's
training pool) are split deterministically by a seeded shuffle of their document ids, documented
in the README.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

csv.field_size_limit(1 << 24)  # PubMedQA-sized cells

HOC_HALLMARKS = [
    "Activating invasion and metastasis", "Avoiding immune destruction", "Cellular energetics",
    "Enabling replicative immortality", "Evading growth suppressors", "Genomic instability and mutation",
    "Inducing angiogenesis", "Resisting cell death", "Sustaining proliferative signaling",
    "Tumor promoting inflammation",
]


class DatasetError(ValueError):
    """Bad downstream data: the message names the file and line (or record)."""


@dataclass
class Example:
    """One input of a sequence-level task: a text (or pair) and its label.

    label: a class name (relation, qa_yesno), a float (similarity) or a list of class names
    (doc_classification, multi-label)."""
    text: str
    text_b: str | None
    label: Any
    where: str = ""  # file:line, for error messages


@dataclass
class QAExample:
    """An extractive question: the answer spans are character offsets into the context."""
    qid: str
    question: str
    context: str
    answers: list[str] = field(default_factory=list)
    answer_starts: list[int] = field(default_factory=list)
    where: str = ""


def _convert(value: str | None, task: str, separator: str | None, where: str) -> Any:
    if value is None or not value.strip():
        raise DatasetError(f"{where}: missing label")
    if task == "similarity":
        try:
            return float(value)
        except ValueError:
            raise DatasetError(f"{where}: expected a numeric score, got {value!r}") from None
    if task == "doc_classification":
        parts = value.split(separator) if separator else [value]
        return sorted({p.strip() for p in parts if p.strip()})
    return value.strip()


def _tsv_rows(path: Path, dataset) -> list[tuple[int, dict]]:
    """Rows as dicts (a quoted cell may hold tabs, as in BIOSSES). The first row is a header when it
    names the text and label columns; a file without one (BioBERT/BLUE style) takes its column
    names from the entry's `columns`. Row numbers are records (a quoted cell may span lines)."""
    with open(path, encoding="utf-8", newline="") as stream:
        rows = [(n, r) for n, r in enumerate(csv.reader(stream, delimiter="\t"), start=1)
                if any(cell.strip() for cell in r)]
    if not rows:
        raise DatasetError(f"{path}: no rows")
    first = rows[0][1]
    if dataset.text_column in first and dataset.label_column in first:
        names, rows = first, rows[1:]
    elif dataset.columns:
        names = dataset.columns
    else:
        raise DatasetError(f"{path}:1: no header row naming {dataset.text_column!r} and {dataset.label_column!r}; "
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


def read_table(path: Path, dataset) -> list[Example]:
    """TSV or JSON Lines with the entry's text (and text_b) and label columns."""
    if not path.is_file() or path.stat().st_size == 0:
        raise DatasetError(f"{path}: empty or missing file")
    rows = _jsonl_rows(path) if dataset.format == "jsonl" else _tsv_rows(path, dataset)
    examples = []
    for line_no, row in rows:
        where = f"{path}:{line_no}"
        wanted = [c for c in (dataset.text_column, dataset.text_b_column, dataset.label_column) if c]
        missing = [c for c in wanted if c not in row]
        if missing:
            raise DatasetError(f"{where}: no column {missing[0]!r} (has {sorted(row)})")
        text = str(row[dataset.text_column])
        if not text.strip():
            raise DatasetError(f"{where}: empty text in column {dataset.text_column!r}")
        label = _convert(str(row[dataset.label_column]), dataset.task, dataset.label_separator, where)
        text_b = str(row[dataset.text_b_column]) if dataset.text_b_column else None
        examples.append(Example(text, text_b, label, where))
    if not examples:
        raise DatasetError(f"{path}: no examples")
    return examples


def read_hoc(directory: Path) -> list[tuple[str, Example]]:
    """Hallmarks of Cancer: text/PMID.txt (a sentence per line) and labels/PMID.txt (per sentence,
    `<`-terminated, `AND`-joined `--` paths). One example per abstract; its labels are the top-level
    hallmarks of all its sentences (BLUE/BLURB)."""
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
                if top in HOC_HALLMARKS:
                    labels.add(top)
                elif top and top != "NULL":
                    raise DatasetError(f"{label_file}: unknown hallmark {top!r}")
        text = " ".join(line.strip() for line in text_file.read_text(encoding="utf-8").splitlines() if line.strip())
        documents.append((text_file.stem, Example(text, None, sorted(labels), str(text_file))))
    if not documents:
        raise DatasetError(f"{texts}: no abstracts")
    return documents


def read_pubmedqa(path: Path) -> dict[str, Example]:
    """PubMedQA PQA-L (`ori_pqal.json`): question + its contexts -> yes/no/maybe, by PMID."""
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


def read_squad(path: Path) -> list[QAExample]:
    """SQuAD-format JSON (BioASQ factoid as BioBERT distributes it): data/paragraphs/qas."""
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
                        raise DatasetError(f"{where}: answer {answer.get('text')!r} is not at offset {start} of the context")
                examples.append(QAExample(str(qa.get("id", where)), qa["question"], context,
                                          [x["text"] for x in answers], [x["answer_start"] for x in answers], where))
    if not examples:
        raise DatasetError(f"{path}: no questions")
    return examples


def split_ids(ids: list[str], fractions: dict[str, float], seed: int) -> dict[str, list[str]]:
    """A seeded shuffle of sorted ids cut into named parts (the rest is `train`)."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    parts, start = {}, 0
    for name, fraction in fractions.items():
        count = round(len(order) * fraction)
        parts[name] = order[start:start + count]
        start += count
    parts["train"] = order[start:]
    return parts


def check_labels(examples: list, known: list[str] | None, task: str) -> None:
    """An entry that lists its labels (NER tags or classes) accepts no other."""
    if not known or task == "similarity":
        return
    for example in examples:
        if hasattr(example, "tags"):  # an NER sentence
            labels, where = example.tags, getattr(example, "where", "")
        else:
            labels = example.label if isinstance(example.label, list) else [example.label]
            where = example.where
        for label in labels:
            if label not in known:
                raise DatasetError(f"{where}: unknown label {label!r} (expected one of {known})")


def dataset_files(dataset, resolve) -> list[Path]:
    """Every file an entry reads (for the stage keys' fingerprints and the missing-file check)."""
    if dataset.folds:
        return [resolve(fold) / f"{split}.tsv" for fold in dataset.folds for split in ("train", "test")]
    names = [dataset.path, dataset.train, dataset.dev, dataset.test]
    return [resolve(name) for name in names if name]


def _read(dataset, path: Path) -> list:
    from bioray.tasks.ner import read_conll
    from bioray.tasks.pubtator import read_pubtator

    if dataset.format == "conll":
        return read_conll(path)
    if dataset.format == "pubtator":
        return read_pubtator(path, dataset.entity_types)
    if dataset.format == "squad":
        return read_squad(path)
    return read_table(path, dataset)


def load_splits(dataset, resolve, fold: int | None = None) -> dict[str, list]:
    """train / dev / test examples of a registry entry (of one fold for k-fold entries)."""
    if dataset.format == "hoc":
        documents = dict(read_hoc(resolve(dataset.path)))
        parts = split_ids(list(documents), {"dev": dataset.split.dev, "test": dataset.split.test}, dataset.split.seed)
        splits = {name: [documents[i] for i in ids] for name, ids in parts.items()}
    elif dataset.format == "pubmedqa":
        questions = read_pubmedqa(resolve(dataset.path))
        truth_file = resolve(dataset.test)
        truth = json.loads(truth_file.read_text(encoding="utf-8"))
        unknown = sorted(set(truth) - set(questions))
        if unknown:
            raise DatasetError(f"{truth_file}: question {unknown[0]} is not in {dataset.path}")
        pool = split_ids([q for q in questions if q not in truth], {"dev": dataset.split.dev}, dataset.split.seed)
        splits = {name: [questions[i] for i in ids] for name, ids in pool.items()}
        splits["test"] = [Example(questions[q].text, questions[q].text_b, answer, f"{truth_file}: question {q}")
                          for q, answer in sorted(truth.items())]
    elif dataset.folds:
        directory = resolve(dataset.folds[fold or 0])
        splits = {split: _read(dataset, directory / f"{split}.tsv") for split in ("train", "test")}
    else:
        splits = {split: _read(dataset, resolve(getattr(dataset, split)))
                  for split in ("train", "dev", "test") if getattr(dataset, split)}
    if dataset.max_train_examples:
        splits["train"] = splits["train"][: dataset.max_train_examples]
    for examples in splits.values():
        if dataset.format != "squad":
            check_labels(examples, dataset.labels, dataset.task)
    return splits

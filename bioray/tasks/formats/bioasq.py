"""BioASQ's official JSON (task B training sets and `*_golden.json`):
`{"questions": [{"id", "body", "type", "snippets": [{"text", ...}], "exact_answer"}]}`.

The entry's task type picks the questions read (QUESTION_TYPES); the others (and `summary`) are
skipped. Factoid and list questions become one QAExample per snippet (the snippet is the context), all
carrying the question's id and gold items; a yes/no question becomes one pair (body, the snippets
joined) labelled yes/no, as BLURB reads BioASQ yes/no.

exact_answer, by type: factoid, a list of synonyms or a list of lists of synonyms (all synonyms of one
answer: one gold item); list, a list of items, each a list of synonyms or one string; yesno, "yes" or
"no". Training has no spans: an answer is located in a snippet by exact, then case-insensitive search,
and a snippet without it is no training example for that answer (BioBERT's preprocessing).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from bioray.tasks.examples import DatasetError, Example, QAExample
from bioray.tasks.formats.base import PerFileFormat, Resolve, read_each
from bioray.tasks.formats.json_fields import field, is_text, load_json, records, shown

QUESTION_TYPES = {"qa_factoid": "factoid", "qa_list": "list", "qa_yesno": "yesno"}  # task type -> questions it reads
TYPES = ("factoid", "list", "yesno", "summary")

log = logging.getLogger(__name__)


def question_type(dataset) -> str:
    """The BioASQ question type an entry's task reads (factoid for an unknown extractive task)."""
    return QUESTION_TYPES.get(dataset.task, "factoid")


def _synonyms(value, where: str) -> list[str]:
    """One answer's synonyms: a string, or a non-empty list of strings. Blank ones are dropped: an official
    golden file has an answer that is only a blank, which BioASQ's evaluator never matches while its
    question still counts, and so it is scored here (with a warning naming it)."""
    synonyms = [value] if isinstance(value, str) else value
    if not (isinstance(synonyms, list) and synonyms and all(isinstance(s, str) for s in synonyms)):
        raise DatasetError(f"{where}: expected a synonym (a string) or a non-empty list of synonyms (strings), "
                           f"got {shown(value)}")
    kept = [s for s in synonyms if is_text(s)]
    if not kept:
        log.warning("%s: a blank gold answer, %s: it matches no prediction, and its question still counts",
                    where, shown(value))
    return kept


def gold_items(question: dict, kind: str, where: str) -> list[list[str]] | str:
    """The checked exact_answer: a factoid's one item (all synonyms), a list's items, a yes/no label."""
    path = f"{where}.exact_answer"
    if "exact_answer" not in question:
        raise DatasetError(f"{path}: missing (a test file without answers? point `test` at BioASQ's golden JSON)")
    value = question["exact_answer"]
    if kind == "yesno":
        if not (isinstance(value, str) and value.strip().lower() in ("yes", "no")):
            raise DatasetError(f"{path}: expected \"yes\" or \"no\" for a yesno question, got {shown(value)}")
        return value.strip().lower()
    if not (isinstance(value, list) and value):
        expected = "a non-empty list of synonyms (strings, or lists of strings)" if kind == "factoid" \
            else "a non-empty list of items, each a list of synonyms (or a string)"
        raise DatasetError(f"{path}: expected {expected} for a {kind} question, got {shown(value)}")
    items = [_synonyms(item, f"{path}[{k}]") for k, item in enumerate(value)]
    return [[s for synonyms in items for s in synonyms]] if kind == "factoid" else items


def read_questions(path: Path, kind: str) -> list[tuple[str, dict]]:
    """The questions of one type, each with its JSON path, their id, body and type checked; ids unique."""
    tree = load_json(path, "BioASQ JSON")
    if not isinstance(tree, dict) or "questions" not in tree:
        hint = " (it has SQuAD `data`: use format: squad)" if isinstance(tree, dict) and "data" in tree else ""
        raise DatasetError(f"{path}: not BioASQ JSON: expected an object with a `questions` list{hint}")
    chosen, seen, types = [], {}, {}
    for i, question in enumerate(records(tree["questions"], f"{path}: questions", "questions")):
        where = f"{path}: questions[{i}]"
        qtype = field(question, "type", where, f"one of {', '.join(TYPES)}", lambda v: v in TYPES)
        types[qtype] = types.get(qtype, 0) + 1
        qid = field(question, "id", where, "a non-empty string", is_text)
        if qid in seen:
            raise DatasetError(f"{where}.id: {qid!r} is also the id of questions[{seen[qid]}]; expected unique ids")
        seen[qid] = i
        if qtype == kind:
            field(question, "body", where, "the question text (a non-empty string)", is_text)
            chosen.append((where, question))
    if not chosen:
        raise DatasetError(f"{path}: no {kind} questions (has {types or 'none'})")
    return chosen


def snippet_texts(question: dict, where: str) -> list[str]:
    """A question's snippets' texts, in order: its contexts."""
    snippets = records(field(question, "snippets", where, "a non-empty list of snippets",
                             lambda v: isinstance(v, list) and bool(v)), f"{where}.snippets", "snippets")
    return [field(s, "text", f"{where}.snippets[{j}]", "the snippet text (a non-empty string)", is_text)
            for j, s in enumerate(snippets)]


def locate(context: str, synonyms: list[str]) -> tuple[str, int] | None:
    """The first synonym found in the context, as (the context's own text of it, its offset): exact
    matches first, then case-insensitive ones. None when the snippet does not contain the answer."""
    for synonym in synonyms:
        start = context.find(synonym)
        if start >= 0:
            return synonym, start
    for synonym in synonyms:
        found = re.search(re.escape(synonym), context, re.IGNORECASE)  # offsets into the context itself
        if found:
            return found.group(0), found.start()
    return None


def read_extractive(path: Path, kind: str, training: bool) -> list[QAExample]:
    """Factoid or list questions, one example per snippet (for training: per snippet and gold item
    found in it, the item's span its target; snippets without any item are left out)."""
    examples = []
    for where, question in read_questions(path, kind):
        items = gold_items(question, kind, where)
        qid, body = question["id"], question["body"]
        for j, context in enumerate(snippet_texts(question, where)):
            snippet = f"{where}.snippets[{j}]"
            if not training:
                examples.append(QAExample(f"{qid}_{j:03d}", body, context, [], [], snippet, qid, items))
                continue
            for k, synonyms in enumerate(items):
                found = locate(context, synonyms)
                if found:
                    name = f"{qid}_{j:03d}" + (f".{k}" if len(items) > 1 else "")
                    examples.append(QAExample(name, body, context, [found[0]], [found[1]], snippet, qid, items))
    if not examples:
        raise DatasetError(f"{path}: no snippet contains an answer of any {kind} question: nothing to train on")
    return examples


def read_yesno(path: Path) -> list[Example]:
    """Yes/no questions as pairs: the body, and the snippets joined by spaces (BLURB's BioASQ)."""
    return [Example(question["body"], " ".join(snippet_texts(question, where)), gold_items(question, "yesno", where),
                    where) for where, question in read_questions(path, "yesno")]


class BioasqFormat(PerFileFormat):
    def entry_problems(self, dataset) -> list[str]:
        if dataset.folds:
            return ["folds: format 'bioasq' reads official JSON files as `train`/`dev`/`test`, not folds"]
        return super().entry_problems(dataset)

    def read(self, path: Path, dataset, training: bool = False) -> list:
        kind = question_type(dataset)
        return read_yesno(path) if kind == "yesno" else read_extractive(path, kind, training)

    def splits(self, dataset, resolve: Resolve, fold: int | None = None) -> dict[str, list]:
        return read_each({split: (lambda split=split: self.read(resolve(getattr(dataset, split)), dataset,
                                                                training=split == "train"))
                          for split in ("train", "dev", "test") if getattr(dataset, split)})

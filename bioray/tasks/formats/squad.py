"""SQuAD-format JSON (BioASQ factoid/list as BioBERT distributes it): data / paragraphs / qas, one
context (a snippet) per paragraph.

BioBERT names each snippet's copy of a question `<question id>_<nnn>`: the examples of one question id
are one question, answered from all its snippets and scored once. A question's gold is every answer
text of its snippets (factoid: one item, its synonyms; list: each distinct text an item). BioBERT's
test files carry no answers: the entry's `test_gold` (BioASQ's golden JSON) gives the gold items by
question id. A scored split (dev, test) with a question without gold fails: never a silent zero.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field

from bioray.tasks.examples import DatasetError, QAExample
from bioray.tasks.formats.base import FormatOptions, PerFileFormat, Resolve
from bioray.tasks.formats.bioasq import gold_items, question_type, read_questions
from bioray.tasks.formats.json_fields import field, is_text, load_json, records
from bioray.tasks.metrics import normalize_answer

SNIPPET_ID = re.compile(r"^(?P<question>.+)_(?P<snippet>\d{3})$")  # BioBERT: `<question id>_<nnn>`


def _answers(qa: dict, context: str, where: str) -> tuple[list[str], list[int]]:
    """A question's answer spans in this context, each checked to be at its offset."""
    texts, starts = [], []
    for k, answer in enumerate(records(qa.get("answers", []), f"{where}.answers", "answers")):
        at = f"{where}.answers[{k}]"
        text = field(answer, "text", at, "the answer text (a non-empty string)", is_text)
        start = field(answer, "answer_start", at, "a character offset (an integer)",
                      lambda v: isinstance(v, int) and not isinstance(v, bool))
        if context[start:start + len(text)] != text:
            raise DatasetError(f"{at}: answer {text!r} is not at offset {start} of the context")
        texts.append(text)
        starts.append(start)
    return texts, starts


def _question_gold(examples: list[QAExample], kind: str) -> list[list[str]]:
    """A question's gold from its snippets' answers: factoid, all texts as synonyms of one item; list,
    each distinct (normalised) text an item (the file says nothing of synonyms)."""
    texts = list(dict.fromkeys(text for e in examples for text in e.answers))
    if not texts:
        return []
    if kind == "factoid":
        return [texts]
    items: dict[str, list[str]] = {}
    for text in texts:  # texts that normalise alike are one item
        items.setdefault(normalize_answer(text), []).append(text)
    return list(items.values())


def read_squad(path: Path, kind: str = "factoid") -> list[QAExample]:
    tree = load_json(path, "SQuAD-format JSON")
    if not isinstance(tree, dict) or "data" not in tree:
        if isinstance(tree, dict) and "questions" in tree:
            raise DatasetError(f"{path}: has `questions`, not SQuAD `data`: this is BioASQ's official JSON; use "
                               f"format: bioasq (or, for a golden file, give it as the entry's `test_gold`)")
        raise DatasetError(f"{path}: not SQuAD-format JSON: expected an object with a `data` list")
    examples, asked = [], {}
    for a, article in enumerate(records(tree["data"], f"{path}: data", "articles")):
        paragraphs = field(article, "paragraphs", f"{path}: data[{a}]", "a list of paragraphs",
                           lambda v: isinstance(v, list))
        for p, paragraph in enumerate(records(paragraphs, f"{path}: data[{a}].paragraphs", "paragraphs")):
            at = f"{path}: data[{a}].paragraphs[{p}]"
            context = field(paragraph, "context", at, "the context text (a non-empty string)", is_text)
            qas = field(paragraph, "qas", at, "a list of questions", lambda v: isinstance(v, list))
            for q, qa in enumerate(records(qas, f"{at}.qas", "questions")):
                where = f"{at}.qas[{q}]"
                qid = str(field(qa, "id", where, "an id (a string)", lambda v: is_text(v) or isinstance(v, int)))
                question = field(qa, "question", where, "the question text (a non-empty string)", is_text)
                snippet = SNIPPET_ID.match(qid)
                question_id = snippet.group("question") if snippet else qid
                first = asked.setdefault(question_id, (question, where))
                if first[0] != question:
                    raise DatasetError(f"{where}.id: {qid!r} is a snippet of question {question_id!r} (BioBERT's "
                                       f"`<question id>_<nnn>`), but asks another question than {first[1]}")
                answers, starts = _answers(qa, context, where)
                examples.append(QAExample(qid, question, context, answers, starts, where, question_id))
    if not examples:
        raise DatasetError(f"{path}: no questions (data[].paragraphs[].qas[] is empty)")
    by_question: dict[str, list[QAExample]] = {}
    for example in examples:
        by_question.setdefault(example.question_id, []).append(example)
    for group in by_question.values():
        gold = _question_gold(group, kind)
        for example in group:
            example.gold = gold
    return examples


def apply_golden(examples: list[QAExample], test: Path, golden: Path, kind: str) -> None:
    """The gold items of the test questions from BioASQ's golden JSON, by question id. A test question
    not in it, or a golden question not in the test file (the official evaluator scores it 0), fails."""
    questions = read_questions(golden, kind)
    gold = {question["id"]: gold_items(question, kind, where) for where, question in questions}
    for example in examples:
        if example.question_id not in gold:
            raise DatasetError(f"{example.where}: question {example.question_id!r} has no gold answer in {golden} "
                               f"(no {kind} question with that id)")
        example.gold = gold[example.question_id]
    asked = {e.question_id for e in examples}
    missing = [(where, question["id"]) for where, question in questions if question["id"] not in asked]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetError(f"{missing[0][0]}: {kind} question {missing[0][1]!r}{more} is not in {test}: the official "
                           f"score counts it as unanswered; expected the test file to hold every {kind} question")


def require_gold(examples: list[QAExample], path: Path) -> None:
    """Every question of a scored split has gold answers."""
    if not any(e.gold for e in examples):
        raise DatasetError(f"{path}: no gold answers in any question (BioBERT's SQuAD test files carry none): give "
                           f"BioASQ's golden JSON as the entry's `test_gold`")
    for example in examples:
        if not example.gold:
            raise DatasetError(f"{example.where}: question {example.question_id!r} has no gold answer in any of its "
                               f"snippets; expected answers (or the entry's `test_gold`)")


class SquadOptions(FormatOptions):
    file_keys = ("test_gold",)
    test_gold: str | None = Field(None, description="BioASQ's official golden JSON (`*_golden.json`) with the gold "
                                  "answers of the `test` file's questions, by question id (BioBERT's SQuAD test files "
                                  "carry none), under finetune.data_root.")


class SquadFormat(PerFileFormat):
    Options = SquadOptions

    def entry_problems(self, dataset) -> list[str]:
        if dataset.folds:
            return ["folds: format 'squad' reads `train`/`dev`/`test` files, not folds"]
        return super().entry_problems(dataset)

    def files(self, dataset, resolve: Resolve) -> list[Path]:
        gold = self.options.test_gold
        return super().files(dataset, resolve) + ([resolve(gold)] if gold else [])

    def read(self, path: Path, dataset) -> list[QAExample]:
        return read_squad(path, question_type(dataset))

    def splits(self, dataset, resolve: Resolve, fold: int | None = None) -> dict[str, list]:
        splits = super().splits(dataset, resolve, fold)
        if self.options.test_gold:
            apply_golden(splits["test"], resolve(dataset.test), resolve(self.options.test_gold), question_type(dataset))
        for split in ("dev", "test"):
            if split in splits:
                require_gold(splits[split], resolve(getattr(dataset, split)))
        return splits

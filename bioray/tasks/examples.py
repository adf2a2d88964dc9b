"""What downstream datasets are read into, and the error bad data raises: the bottom of bioray.tasks
(formats produce these, task types consume them; this module imports neither)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Words of raw text, BioBERT-style: runs of letters and digits, or any other single non-space character
# (BioBERT's preprocessed files split punctuation, symbols and '_' off). PubTator documents become NER
# sentences with it and raw text is tagged with it, so a model is used on the words it was trained on.
WORD = re.compile(r"[^\W_]+|\S")


class DatasetError(ValueError):
    """Bad downstream data: the message names the file and line (or record) and what was expected."""


@dataclass
class Sentence:
    """An NER sentence: words and their IOB tags."""

    words: list[str]
    tags: list[str]
    where: str = ""  # file:line of its first token, for error messages


@dataclass
class Example:
    """One input of a sequence-level task: a text (or pair) and its label.

    label: as read (a string), then the task's own type: a class name (relation, qa_yesno), a float
    (similarity) or a list of class names (doc_classification, multi-label)."""

    text: str
    text_b: str | None
    label: Any
    where: str = ""  # file:line, for error messages


def example_words(example) -> list[str]:
    """An example's words (an NER sentence's own; a text's whitespace-separated ones): what a vocabulary's
    subwords per word is counted over."""
    if isinstance(example, Sentence):
        return example.words
    if isinstance(example, QAExample):
        return (example.question + " " + example.context).split()
    return (example.text + " " + (example.text_b or "")).split()


@dataclass
class QAExample:
    """An extractive question asked of one context (a BioASQ snippet); the answer spans are character
    offsets into that context (the training targets).

    A BioASQ question has several snippets, so several examples: those sharing a `question_id` are one
    question, predicted snippet by snippet and scored once on their merged answers against `gold`."""

    qid: str  # this example's own id (BioBERT's SQuAD files: `<question id>_<nnn>`)
    question: str
    context: str
    answers: list[str] = field(default_factory=list)
    answer_starts: list[int] = field(default_factory=list)
    where: str = ""
    question_id: str = ""  # the question it belongs to; default: qid (a question with one context)
    gold: list[list[str]] = field(default_factory=list)  # the question's gold answers: items, each its synonyms

    def __post_init__(self):
        self.question_id = self.question_id or self.qid

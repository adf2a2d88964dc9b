"""BioASQ list questions ("Which genes ...?"): the factoid model, answering with a set of items;
scored by the official list measures (precision, recall, F1 per question, mean over questions).

A task type of its own rather than a mode of qa_factoid: an entry's questions are one type (BioBERT
distributes factoid and list files apart; the official JSON mixes them and the bioasq format keeps
the type the task reads), and each task type has one primary metric for the report and the gate.

Training and reading are the factoid task's (extractive spans, each snippet a context); only the
decision differs. As BioBERT did for list questions, a question's items are its merged ranked answers
whose probability (softmax within its snippet) reaches LIST_THRESHOLD, at least the best one (an
empty answer scores 0 for sure) and at most LIST_MAX.
"""

from __future__ import annotations

from bioray.tasks.examples import QAExample
from bioray.tasks.metrics import list_scores
from bioray.tasks.qa_factoid import FactoidTask
from bioray.tasks.qa_merge import question_gold, rank_per_question

# Untuned: a candidate that holds a fifth of its snippet's probability is taken as an item. A snippet
# that names several items shares its mass among them, so a threshold near 1/2 would keep one per snippet.
LIST_THRESHOLD = 0.2
LIST_MAX = 10  # items per question; BioASQ list questions have a handful of gold items


def list_items(ranked: list[tuple[str, float]], threshold: float = LIST_THRESHOLD, most: int = LIST_MAX) -> list[str]:
    """A question's items from its ranking (best first): those at or above the threshold, at least one."""
    kept = [text for text, probability in ranked if probability >= threshold][:most]
    return kept or [text for text, _ in ranked[:1]]


class ListTask(FactoidTask):
    name, primary_metric, metrics = "qa_list", "list_f1", ("list_precision", "list_recall")

    def answers(self, examples: list[QAExample], predictions: list[dict[str, float]]) -> dict[str, list[str]]:
        ranked = rank_per_question([e.question_id for e in examples], predictions)
        return {question: list_items(found) for question, found in ranked.items()}

    def score(self, examples: list[QAExample], predictions: list[dict[str, float]], labels) -> dict[str, float]:
        """Over questions: each gold item is a list of synonyms."""
        gold, answers = question_gold(examples), self.answers(examples, predictions)
        return list_scores(list(gold.values()), [answers[q] for q in gold])

    @staticmethod
    def gold_row(items: list[list[str]]) -> list:
        return items

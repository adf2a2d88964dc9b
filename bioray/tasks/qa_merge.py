"""From per-snippet predictions to per-question answers, as BioBERT and the BioASQ evaluator score
extractive QA: each snippet of a question is read as its own context, its candidate spans get
probabilities, and the question's answers are its candidates merged over all its snippets and ranked.

Pure functions of plain data (no model), so the aggregation is tested on hand-built cases.
"""

from __future__ import annotations

import math

from bioray.tasks.metrics import normalize_answer

NBEST = 20  # spans per snippet that share its probability mass (BioBERT's n-best size)


def snippet_probabilities(scores: dict[str, float], nbest: int = NBEST) -> dict[str, float]:
    """One snippet's candidate texts (score: start + end logit) -> probabilities: a softmax over its
    `nbest` best, as BioBERT's n-best. Raw logits of different contexts are on no common scale; the
    softmax per snippet puts the snippets of a question on one, so their candidates can be merged and
    a list threshold means the same in every snippet. Ties of score are cut by text (deterministic)."""
    best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:nbest]
    if not best:
        return {}
    top = best[0][1]
    weights = {text: math.exp(score - top) for text, score in best}
    total = sum(weights.values())
    return {text: weight / total for text, weight in weights.items()}


Ranking = list[tuple[str, float]]  # (answer text, probability), best first


def rank_per_question(question_ids: list[str], candidates: list[dict[str, float]]) -> dict[str, Ranking]:
    """Each question's answers, best first, as (text, probability).

    question_ids[i] is the question of snippet i, candidates[i] its candidates' probabilities. As
    BioBERT's transform_n2b_factoid does, the candidates of a question's snippets are merged by
    normalised text and their probabilities summed (an answer found in several snippets gains), shown
    with the text of its most probable mention; ranked by the sum, ties by normalised text, so the order
    depends on no snippet order. Candidates that normalise to nothing (an article, punctuation) match
    no answer and are dropped. Every question is a key, in order of first appearance, one without
    candidates with an empty ranking."""
    merged: dict[str, dict[str, list]] = {}  # question -> normalised text -> [shown text, its prob., sum]
    for question, found in zip(question_ids, candidates, strict=True):
        answers = merged.setdefault(question, {})
        for text, probability in found.items():
            key = normalize_answer(text)
            if not key:
                continue
            entry = answers.setdefault(key, [text, probability, 0.0])
            if probability > entry[1]:
                entry[:2] = [text, probability]
            entry[2] += probability
    return {question: [(answers[k][0], answers[k][2]) for k in sorted(answers, key=lambda k: (-answers[k][2], k))]
            for question, answers in merged.items()}


def question_gold(examples: list) -> dict[str, list[list[str]]]:
    """Each question's gold items (synonym lists), in order of first appearance; the examples of one
    question (its snippets) carry the same gold."""
    gold: dict[str, list[list[str]]] = {}
    for example in examples:
        gold.setdefault(example.question_id, example.gold)
    return gold


def snippet_counts(examples: list) -> dict[str, int]:
    """How many snippets (contexts) each question was read in."""
    counts: dict[str, int] = {}
    for example in examples:
        counts[example.question_id] = counts.get(example.question_id, 0) + 1
    return counts

"""The papers' metrics for the non-NER tasks, computed with the reference libraries (sklearn, scipy;
imported where they score, so that validating a workflow does not pay for them).

NER's entity-level F1 (seqeval) lives with the NER task in bioray.tasks.ner.
"""

from __future__ import annotations

import re
import string

import numpy as np


def relation_scores(gold: list[str], predicted: list[str], negative: str) -> dict[str, float]:
    """Micro precision/recall/F1 over the positive classes only (BioBERT re_eval, BLUE, BLURB):
    a pair predicted negative counts as a miss, a negative pair predicted positive as a false alarm."""
    from sklearn.metrics import precision_recall_fscore_support  # sklearn in the scoring, not at import

    positives = sorted((set(gold) | set(predicted)) - {negative})
    precision, recall, f1, _ = precision_recall_fscore_support(gold, predicted, labels=positives, average="micro",
                                                               zero_division=0)
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def classification_scores(gold: list[str], predicted: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the classes present in gold or predictions (PubMedQA)."""
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(gold, predicted)),
            "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0))}


def similarity_scores(gold: list[float], predicted: list[float]) -> dict[str, float]:
    """Pearson r (BIOSSES in BLUE and BLURB)."""
    from scipy.stats import pearsonr

    if len(gold) < 2 or np.std(predicted) == 0:
        return {"pearson": 0.0}  # undefined: a constant prediction explains nothing
    return {"pearson": float(pearsonr(gold, predicted).statistic)}


def multilabel_scores(gold: list[list[str]], predicted: list[list[str]], labels: list[str]) -> dict[str, float]:
    """HoC: micro-F1 over (document, label) decisions (BLURB) and example-based F1, the mean of each
    document's F1 (BLUE); a document with no gold and no predicted label scores 1."""
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    binarizer = MultiLabelBinarizer(classes=labels)
    y_true, y_pred = binarizer.fit_transform(gold), binarizer.transform(predicted)
    return {"micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
            "example_f1": float(f1_score(y_true, y_pred, average="samples", zero_division=1))}


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, articles or extra spaces (SQuAD-style): answers that differ only so
    are the same answer, when scoring and when merging a question's candidates."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def factoid_scores(gold: list[list[str]], ranked: list[list[str]]) -> dict[str, float]:
    """BioASQ factoid, one entry per question: strict accuracy (the first answer is right), lenient
    accuracy (one of the first five is) and mean reciprocal rank over the first five; an answer is right
    when it equals one of the gold synonyms after normalisation."""
    strict = lenient = reciprocal = 0.0
    for synonyms, answers in zip(gold, ranked, strict=True):
        wanted = {normalize_answer(s) for s in synonyms} - {""}  # nothing matches an empty answer
        ranks = [i for i, answer in enumerate(answers[:5]) if normalize_answer(answer) in wanted]
        if ranks:
            strict += ranks[0] == 0
            lenient += 1
            reciprocal += 1 / (ranks[0] + 1)
    n = max(len(gold), 1)
    return {"strict_accuracy": strict / n, "lenient_accuracy": lenient / n, "mrr": reciprocal / n}


def list_scores(gold: list[list[list[str]]], predicted: list[list[str]]) -> dict[str, float]:
    """BioASQ list questions (the official evaluator's measures), one entry per question: gold items
    (each a list of synonyms) and the predicted items. Per question, precision = predicted items that
    are right / predicted items, recall = gold items matched / gold items, F1 of the two; each measure is
    the mean over questions. A predicted item is right when it equals a synonym of a gold item not yet
    matched (after normalisation): a gold item counts once, so a second synonym of it, or the same
    answer twice, is wrong, as in the evaluator (which removes a matched item). A question with no
    predicted item scores 0 on all three."""
    precision = recall = f1 = 0.0
    for items, answers in zip(gold, predicted, strict=True):
        unmatched = [{normalize_answer(s) for s in synonyms} - {""} for synonyms in items]
        right = 0
        for answer in answers:
            key = normalize_answer(answer)
            hit = next((i for i, synonyms in enumerate(unmatched) if key in synonyms), None)
            if hit is not None:
                unmatched.pop(hit)
                right += 1
        p = right / len(answers) if answers else 0.0
        r = right / len(items) if items else 0.0
        precision, recall = precision + p, recall + r
        f1 += 2 * p * r / (p + r) if p + r else 0.0
    n = max(len(gold), 1)
    return {"list_f1": f1 / n, "list_precision": precision / n, "list_recall": recall / n}

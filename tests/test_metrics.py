"""The papers' metrics on hand-built cases, including the traps, checked against hand counts and
the reference libraries (seqeval, sklearn, scipy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from seqeval.metrics import f1_score as seqeval_f1
from sklearn.metrics import f1_score

from bioray.data.vocab import train_wordpiece
from bioray.tasks.examples import Sentence
from bioray.tasks.metrics import (
    classification_scores,
    factoid_scores,
    multilabel_scores,
    relation_scores,
    similarity_scores,
)
from bioray.tasks.ner import entity_scores, predict_tags


def test_ner_i_without_b_starts_an_entity_as_in_conlleval():
    gold = [["O", "B", "I", "O"]]
    assert entity_scores(gold, [["O", "I", "I", "O"]])["f1"] == 1.0  # conlleval: I after O opens an entity
    typed_gold, typed_pred = [["B-protein", "I-protein", "O"]], [["B-protein", "I-DNA", "O"]]
    scores = entity_scores(typed_gold, typed_pred)  # a type change splits the span: no exact match
    assert scores["f1"] == 0.0
    assert scores["f1"] == seqeval_f1(typed_gold, typed_pred)


def test_ner_empty_predictions_and_a_type_seen_only_in_test():
    gold = [["B-protein", "O", "B-RNA"], ["O", "B-protein", "I-protein"]]
    empty = entity_scores(gold, [["O"] * 3, ["O"] * 3])
    assert empty == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    never_trained_rna = [["B-protein", "O", "O"], ["O", "B-protein", "I-protein"]]
    scores = entity_scores(gold, never_trained_rna)
    assert scores["precision"] == 1.0 and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(seqeval_f1(gold, never_trained_rna))


class TagByToken(torch.nn.Module):
    """A token classifier whose tag is a fixed function of the token id: predictions are known."""

    def __init__(self, tag_of_id: torch.Tensor):
        super().__init__()
        self.table = torch.nn.functional.one_hot(tag_of_id, 3).float() * 10

    def forward(self, input_ids, attention_mask=None, **_):
        return type("Output", (), {"logits": self.table[input_ids]})()


def test_entities_across_sub_tokens_and_window_borders_are_mapped_back_to_words(tmp_path):
    texts = ["adenomatous polyposis coli is a tumour suppressor"] * 30
    train_wordpiece(texts, 50, lowercase=False, min_frequency=1).save_pretrained(str(tmp_path))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    words = ["the", "adenomatous", "polyposis", "coli", "is", "a", "tumour", "suppressor"] * 3
    gold = ["O", "B", "I", "I", "O", "O", "O", "O"] * 3
    pieces = {w: tokenizer.tokenize(w) for w in words}
    assert len(pieces["adenomatous"]) > 1 or len(pieces["polyposis"]) > 1  # real sub-tokens
    tag_of_id = torch.zeros(len(tokenizer), dtype=torch.long)  # O everywhere ...
    tag_of_id[tokenizer.convert_tokens_to_ids(pieces["adenomatous"][0])] = 1  # ... B on the entity's first piece,
    for word in ("polyposis", "coli"):                                         # I on the next words' first pieces;
        tag_of_id[tokenizer.convert_tokens_to_ids(pieces[word][0])] = 2       # later pieces say B: must be ignored
        for piece in pieces[word][1:] + pieces["adenomatous"][1:]:
            tag_of_id[tokenizer.convert_tokens_to_ids(piece)] = 1
    model = TagByToken(tag_of_id)
    # max_length 8: 6 sub-tokens per window, so the 3-word entities straddle window borders
    predicted = predict_tags(model, tokenizer, [Sentence(words, gold)], ["O", "B", "I"], max_length=8, batch_size=2)
    assert predicted == [gold]
    assert entity_scores([gold], predicted)["f1"] == 1.0


def test_relation_micro_f1_over_positive_classes_only():
    gold = ["CPR:4", "False", "CPR:3", "CPR:4", "False"]
    predicted = ["CPR:4", "CPR:3", "False", "CPR:3", "False"]
    # by hand: TP 1 (row 0); FP 2 (rows 1, 3); FN 2 (rows 2, 3); the True Negative (row 4) counts for nothing
    scores = relation_scores(gold, predicted, negative="False")
    assert scores == pytest.approx({"precision": 1 / 3, "recall": 1 / 3, "f1": 1 / 3})
    reference = f1_score(gold, predicted, labels=["CPR:3", "CPR:4"], average="micro")
    assert scores["f1"] == pytest.approx(reference)
    only_test = relation_scores(["CPR:9"] + gold, ["False"] + predicted, negative="False")  # a class never predicted
    assert only_test["recall"] == pytest.approx(1 / 4) and only_test["precision"] == pytest.approx(1 / 3)
    assert relation_scores(gold, ["False"] * 5, negative="False")["f1"] == 0.0  # empty predictions


def test_pearson_matches_scipy_and_a_constant_prediction_scores_zero():
    gold, predicted = [0.0, 1.5, 2.0, 3.2, 4.0], [0.3, 1.0, 2.5, 2.9, 3.7]
    assert similarity_scores(gold, predicted)["pearson"] == pytest.approx(pearsonr(gold, predicted).statistic)
    assert similarity_scores(gold, predicted)["pearson"] == pytest.approx(np.corrcoef(gold, predicted)[0, 1])
    assert similarity_scores(gold, [2.0] * 5)["pearson"] == 0.0


def test_multilabel_micro_and_example_based_f1():
    gold, predicted = [["a", "b"], [], ["c"]], [["a"], [], ["b", "c"]]
    scores = multilabel_scores(gold, predicted, ["a", "b", "c"])
    assert scores["micro_f1"] == pytest.approx(2 / 3)  # TP a, c; FP b (doc 3); FN b (doc 1)
    assert scores["example_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)  # doc 2: nothing vs nothing = 1


def test_yes_no_maybe_accuracy_and_macro_f1_with_a_class_never_predicted():
    gold, predicted = ["yes", "no", "maybe", "yes"], ["yes", "no", "yes", "yes"]
    scores = classification_scores(gold, predicted)
    assert scores["accuracy"] == 0.75
    assert scores["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro", zero_division=0))
    assert scores["macro_f1"] == pytest.approx((0.8 + 1.0 + 0.0) / 3)  # maybe's F1 is 0


def test_factoid_strict_lenient_and_mrr():
    gold = [["BRCA1", "breast cancer 1"], ["p53"], ["insulin"]]
    ranked = [["brca1", "BRCA2"], ["MDM2", "the p53"], ["glucagon"]]
    scores = factoid_scores(gold, ranked)
    assert scores == pytest.approx({"strict_accuracy": 1 / 3, "lenient_accuracy": 2 / 3, "mrr": (1 + 1 / 2) / 3})
    assert factoid_scores(gold, [[], [], []]) == {"strict_accuracy": 0.0, "lenient_accuracy": 0.0, "mrr": 0.0}


def test_word_tags_become_entities_with_character_offsets():
    from bioray.tasks.inference import WORD, _entities

    text = "BRCA1 mutations cause breast cancer and p53 loss."
    spans = [m.span() for m in WORD.finditer(text)]
    words = [text[a:b] for a, b in spans]
    assert words[:3] == ["BRCA1", "mutations", "cause"] and words[-1] == "."
    tags = ["B-gene", "O", "O", "B-disease", "I-disease", "O", "I-gene", "O", "O"]  # I after O opens an entity
    entities = _entities(text, spans, tags, [0.9, 1, 1, 0.8, 0.6, 1, 0.7, 1, 1])
    assert [(e["text"], e["type"]) for e in entities] == [("BRCA1", "gene"), ("breast cancer", "disease"),
                                                          ("p53", "gene")]
    assert all(text[e["start"]:e["end"]] == e["text"] for e in entities)
    assert entities[1]["score"] == pytest.approx(0.7)
    untyped = _entities(text, spans, ["B", "I", "O", "B", "I", "O", "B", "O", "O"], [1.0] * 9)
    assert [(e["text"], e["type"]) for e in untyped] == [("BRCA1 mutations", "ENT"), ("breast cancer", "ENT"),
                                                         ("p53", "ENT")]

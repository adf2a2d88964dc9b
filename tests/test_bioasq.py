"""BioASQ QA you can trust: the official JSON and BioBERT's SQuAD files read on hand-built files (gold
from the golden JSON by question id, errors naming file, JSON path and what was expected); factoid
questions scored per question on the merged answers of their snippets; the list measures. The metrics
and the merge are checked against independent re-implementations written here (plain Python)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from bioray.config import DatasetConfig
from bioray.tasks import catalog
from bioray.tasks.examples import DatasetError, QAExample
from bioray.tasks.metrics import factoid_scores, list_scores
from bioray.tasks.qa_merge import rank_per_question, snippet_probabilities
from bioray.tasks.splits import load_splits

F1, F2 = "5a6d186db750ff4455000031", "5a6d186db750ff4455000032"  # BioASQ ids: 24 hex digits
L1, Y1, Y2, S1 = "5a6d186db750ff4455000041", "5a6d186db750ff4455000051", "5a6d186db750ff4455000052", \
    "5a6d186db750ff4455000061"


def _official() -> dict:
    """An official BioASQ JSON file (training set / golden file) with every question type."""
    return {"questions": [
        {"id": F1, "type": "factoid", "body": "Which gene is mutated in hereditary breast cancer?",
         "snippets": [{"text": "Mutations of brca1 raise the risk.", "document": "http://www.ncbi.nlm.nih.gov/pubmed/1"},
                      {"text": "Nothing to see in this snippet.", "document": "http://www.ncbi.nlm.nih.gov/pubmed/2"},
                      {"text": "Carriers of BRCA1 (breast cancer 1) variants.", "document": "pubmed/3"}],
         "exact_answer": [["BRCA1"], ["breast cancer 1"]]},  # a list of lists: all synonyms of one answer
        {"id": F2, "type": "factoid", "body": "Which protein guards the genome?",
         "snippets": [{"text": "p53 is the guardian of the genome."}], "exact_answer": ["p53", "TP53"]},
        {"id": L1, "type": "list", "body": "Which drugs reduce fever?",
         "snippets": [{"text": "Aspirin and ibuprofen reduce fever."}, {"text": "PARACETAMOL does too."}],
         "exact_answer": [["aspirin", "acetylsalicylic acid"], ["ibuprofen"], "paracetamol"]},
        {"id": Y1, "type": "yesno", "body": "Is aspirin an NSAID?",
         "snippets": [{"text": "Aspirin is an NSAID."}, {"text": "It inhibits COX enzymes."}], "exact_answer": "yes"},
        {"id": Y2, "type": "yesno", "body": "Is insulin a lipid?", "snippets": [{"text": "Insulin is a peptide."}],
         "exact_answer": "No"},
        {"id": S1, "type": "summary", "body": "What is the role of p53?", "snippets": [{"text": "p53 ..."}],
         "ideal_answer": ["It suppresses tumours."]},
    ]}


def _write(path: Path, tree) -> Path:
    path.write_text(json.dumps(tree) if not isinstance(tree, str) else tree)
    return path


def _entry(**fields) -> DatasetConfig:
    return DatasetConfig.model_validate({"name": "bioasq", **fields})


def _squad(paragraphs: list[tuple[str, str, str, list[tuple[str, int]]]]) -> dict:
    """A SQuAD-format file, one paragraph per (id, question, context, answers) as BioBERT writes them."""
    return {"version": "BioASQ6b", "data": [{"title": "BioASQ6b", "paragraphs": [
        {"context": context, "qas": [{"id": qid, "question": question,
                                      **({"answers": [{"text": t, "answer_start": s} for t, s in answers]}
                                         if answers else {})}]}
        for qid, question, context, answers in paragraphs]}]}


BRCA = "Which gene is mutated in hereditary breast cancer?"
P53 = "Which protein guards the genome?"
SQUAD_TEST = [(f"{F1}_000", BRCA, "Mutations of brca1 raise the risk.", []),
              (f"{F1}_001", BRCA, "Carriers of BRCA1 (breast cancer 1) variants.", []),
              (f"{F2}_000", P53, "p53 is the guardian of the genome.", [])]


# --- independent re-implementations of the measures and the merge (plain Python, no bioray) ----------------------

def _norm(text: str) -> str:
    kept = "".join(ch for ch in text.lower() if ch not in '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~')
    return " ".join(word for word in kept.split() if word not in ("a", "an", "the"))


def _factoid_reference(gold: list[list[str]], ranked: list[list[str]]) -> dict[str, float]:
    strict = lenient = mrr = 0.0
    for synonyms, answers in zip(gold, ranked):
        wanted = [_norm(s) for s in synonyms]
        for rank, answer in enumerate(answers[:5], start=1):
            if _norm(answer) in wanted:
                strict += 1.0 if rank == 1 else 0.0
                lenient += 1.0
                mrr += 1.0 / rank
                break
    return {"strict_accuracy": strict / len(gold), "lenient_accuracy": lenient / len(gold), "mrr": mrr / len(gold)}


def _list_reference(gold: list[list[list[str]]], predicted: list[list[str]]) -> dict[str, float]:
    sums = {"list_precision": 0.0, "list_recall": 0.0, "list_f1": 0.0}
    for items, answers in zip(gold, predicted):
        matched = [False] * len(items)
        right = 0
        for answer in answers:
            for i, synonyms in enumerate(items):
                if not matched[i] and _norm(answer) in [_norm(s) for s in synonyms]:
                    matched[i] = True
                    right += 1
                    break
        precision = right / len(answers) if answers else 0.0
        recall = sum(matched) / len(items)
        sums["list_precision"] += precision
        sums["list_recall"] += recall
        sums["list_f1"] += 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {k: v / len(gold) for k, v in sums.items()}


def _rank_reference(snippets: list[tuple[str, dict[str, float]]]) -> dict[str, list[str]]:
    """Per question: summed probability per normalised answer over its snippets (BioBERT), ranked (ties: by
    normalised text)."""
    sums: dict[str, dict[str, float]] = {}
    for question, found in snippets:
        table = sums.setdefault(question, {})
        for text, probability in found.items():
            if _norm(text):
                table[_norm(text)] = table.get(_norm(text), 0.0) + probability
    return {q: sorted(table, key=lambda k: (-table[k], k)) for q, table in sums.items()}


# --- measures --------------------------------------------------------------------------------------------------

def test_factoid_measures_match_a_reference_with_synonyms_and_duplicates():
    gold = [["BRCA1", "breast cancer 1"], ["p53", "TP53"], ["insulin"], ["EGFR"]]
    ranked = [["Breast cancer 1.", "BRCA2"],           # a synonym, case and punctuation aside: strict
              ["MDM2", "MDM2", "the TP53"],           # a duplicate before the right one: rank 3
              ["glucagon"],                           # wrong
              ["a", "b", "c", "d", "e", "EGFR"]]      # right only at rank 6: outside the five
    scores = factoid_scores(gold, ranked)
    assert scores == pytest.approx(_factoid_reference(gold, ranked))
    assert scores == pytest.approx({"strict_accuracy": 1 / 4, "lenient_accuracy": 2 / 4, "mrr": (1 + 1 / 3) / 4})


def test_list_measures_match_a_reference_with_synonyms_duplicates_and_items():
    gold = [[["aspirin", "acetylsalicylic acid"], ["ibuprofen"], ["paracetamol"]],
            [["ibuprofen"]],
            [["TNF"], ["IL-6"]],
            [["paracetamol"], ["morphine"]]]
    predicted = [["Aspirin", "acetylsalicylic acid", "ibuprofen", "codeine"],  # 2nd synonym of a matched item: wrong
                 ["ibuprofen", "Ibuprofen."],                                 # the same item twice: once right
                 [],                                                          # no answer: 0
                 ["The paracetamol", "morphine"]]                             # all right
    scores = list_scores(gold, predicted)
    assert scores == pytest.approx(_list_reference(gold, predicted))
    p = [2 / 4, 1 / 2, 0.0, 1.0]
    r = [2 / 3, 1.0, 0.0, 1.0]
    f = [2 * a * b / (a + b) if a + b else 0.0 for a, b in zip(p, r)]
    assert scores == pytest.approx({"list_precision": sum(p) / 4, "list_recall": sum(r) / 4, "list_f1": sum(f) / 4})


# --- per-question aggregation (pure, no model) -----------------------------------------------------------------------

def test_snippet_probabilities_are_a_softmax_over_the_n_best():
    probabilities = snippet_probabilities({"BRCA1": 3.0, "BRCA2": 1.0, "gene": 1.0, "risk": -2.0}, nbest=3)
    assert set(probabilities) == {"BRCA1", "BRCA2", "gene"}  # ties of score cut by text: "risk" is 4th
    total = math.exp(3.0) + 2 * math.exp(1.0)
    assert probabilities == pytest.approx({"BRCA1": math.exp(3.0) / total, "BRCA2": math.exp(1.0) / total,
                                           "gene": math.exp(1.0) / total})
    assert snippet_probabilities({}) == {}


def test_merge_per_question_matches_a_reference_with_ties_and_synonyms():
    snippets = [("q1", {"BRCA2": 0.5, "the gene": 0.1, ".": 0.4}),  # "." normalises to nothing: dropped
                ("q2", {"beta": 0.5, "alpha": 0.5}),                 # a tie: by normalised text
                ("q1", {"brca1": 0.3, "Brca2": 0.2}),                # Brca2 = BRCA2: summed, 0.7
                ("q1", {"BRCA1": 0.5, "gene": 0.6}),                 # BRCA1 0.8 first; gene 0.7 ties BRCA2
                ("q3", {})]                                          # a question without candidates
    ranked = rank_per_question([q for q, _ in snippets], [c for _, c in snippets])
    assert {q: [_norm(t) for t, _ in r] for q, r in ranked.items()} == _rank_reference(snippets)
    assert [t for t, _ in ranked["q1"]] == ["BRCA1", "BRCA2", "gene"]  # each shown as its most probable mention
    assert [p for _, p in ranked["q1"]] == pytest.approx([0.8, 0.7, 0.7])
    assert [t for t, _ in ranked["q2"]] == ["alpha", "beta"]
    assert ranked["q3"] == [] and list(ranked) == ["q1", "q2", "q3"]
    reordered = rank_per_question([q for q, _ in reversed(snippets)], [c for _, c in reversed(snippets)])
    assert {q: [_norm(t) for t, _ in r] for q, r in reordered.items()} == \
        {q: [_norm(t) for t, _ in r] for q, r in ranked.items()}  # the ranking depends on no snippet order


def _question(qid: str, snippet: int, gold: list[list[str]]) -> QAExample:
    return QAExample(f"{qid}_{snippet:03d}", "q?", f"context {snippet}", where=f"f.json: {qid}_{snippet:03d}",
                     question_id=qid, gold=gold)


def test_a_question_is_scored_once_on_the_merged_answers_of_its_snippets():
    from bioray.tasks.qa_factoid import FactoidTask

    task = FactoidTask(_entry(task="qa_factoid", train="x", test="x"))
    examples = [_question("qa", 0, [["BRCA1"]]), _question("qa", 1, [["BRCA1"]]),
                _question("qb", 0, [["p53", "TP53"]]), _question("qb", 1, [["p53", "TP53"]]),
                _question("qb", 2, [["p53", "TP53"]])]
    predictions = [{"BRCA2": 0.6, "risk": 0.4},   # qa, snippet 1: wrong
                   {"BRCA1": 0.9, "BRCA2": 0.1},  # qa, snippet 2: right, and surer than snippet 1's best
                   {"MDM2": 0.8}, {"TP53": 0.7, "MDM2": 0.3}, {}]  # qb: MDM2 first, TP53 second
    assert task.answers(examples, predictions) == {"qa": ["BRCA1", "BRCA2", "risk"], "qb": ["MDM2", "TP53"]}
    scores = task.score(examples, predictions, [])
    assert scores == pytest.approx({"strict_accuracy": 1 / 2, "lenient_accuracy": 1.0, "mrr": (1 + 1 / 2) / 2})
    by_snippet = [sorted(p, key=p.get, reverse=True) for p in predictions]
    per_snippet = factoid_scores([e.gold[0] for e in examples], by_snippet)
    assert per_snippet["strict_accuracy"] == pytest.approx(2 / 5)  # what scoring snippets would have said
    rows = task.prediction_rows(examples, predictions)
    assert rows == [{"id": "qa", "gold": ["BRCA1"], "predicted": ["BRCA1", "BRCA2", "risk"], "snippets": 2},
                    {"id": "qb", "gold": ["p53", "TP53"], "predicted": ["MDM2", "TP53"], "snippets": 3}]
    assert "2 questions, read in 5 snippet contexts" in task.details(examples, predictions)


def test_list_questions_take_the_ranked_answers_above_a_threshold():
    from bioray.tasks.qa_list import LIST_THRESHOLD, ListTask, list_items

    assert list_items([("a", 0.9), ("b", LIST_THRESHOLD), ("c", LIST_THRESHOLD / 2)]) == ["a", "b"]
    assert list_items([("a", 0.05), ("b", 0.01)]) == ["a"]  # never empty while there is a candidate
    assert list_items([("a", 0.9), ("b", 0.8), ("c", 0.7)], most=2) == ["a", "b"]
    assert list_items([]) == []

    task = ListTask(_entry(task="qa_list", train="x", test="x"))
    gold = [["aspirin", "acetylsalicylic acid"], ["ibuprofen"], ["paracetamol"]]
    examples = [_question("ql", 0, gold), _question("ql", 1, gold)]
    predictions = [{"Aspirin": 0.5, "ibuprofen": 0.4, "fever": 0.1}, {"paracetamol": 0.02, "acetylsalicylic acid": 0.9}]
    assert task.answers(examples, predictions) == {"ql": ["acetylsalicylic acid", "Aspirin", "ibuprofen"]}
    expected = _list_reference([gold], [["acetylsalicylic acid", "Aspirin", "ibuprofen"]])
    assert task.score(examples, predictions, []) == pytest.approx(expected)
    assert expected == pytest.approx({"list_precision": 2 / 3, "list_recall": 2 / 3, "list_f1": 2 / 3})
    assert task.prediction_rows(examples, predictions)[0]["gold"] == gold


# --- the official JSON -----------------------------------------------------------------------------------------------

def test_official_json_factoid_one_example_per_snippet_and_located_training_answers(tmp_path):
    path = _write(tmp_path / "training.json", _official())
    splits = load_splits(_entry(task="qa_factoid", format="bioasq", train=str(path), test=str(path)), Path)
    test = splits["test"]
    assert [(e.qid, e.question_id) for e in test] == [(f"{F1}_000", F1), (f"{F1}_001", F1), (f"{F1}_002", F1),
                                                     (f"{F2}_000", F2)]
    assert test[0].gold == [["BRCA1", "breast cancer 1"]] and test[3].gold == [["p53", "TP53"]]
    assert test[1].where == f"{path}: questions[0].snippets[1]"
    train = splits["train"]  # the answer located in each snippet; the snippet without it is left out
    assert [(e.qid, e.answers) for e in train] == [(f"{F1}_000", ["brca1"]), (f"{F1}_002", ["BRCA1"]),
                                                  (f"{F2}_000", ["p53"])]
    assert all(e.context[e.answer_starts[0]:].startswith(e.answers[0]) for e in train)


def test_official_json_list_questions_train_on_each_item_found(tmp_path):
    path = _write(tmp_path / "training.json", _official())
    splits = load_splits(_entry(task="qa_list", format="bioasq", train=str(path), test=str(path)), Path)
    assert [e.answers for e in splits["train"]] == [["Aspirin"], ["ibuprofen"], ["PARACETAMOL"]]
    assert [e.qid for e in splits["train"]] == [f"{L1}_000.0", f"{L1}_000.1", f"{L1}_001.2"]
    assert splits["test"][0].gold == [["aspirin", "acetylsalicylic acid"], ["ibuprofen"], ["paracetamol"]]


def test_official_json_yes_no_as_blurb_reads_it(tmp_path):
    path = _write(tmp_path / "training.json", _official())
    test = load_splits(_entry(task="qa_yesno", format="bioasq", train=str(path), test=str(path)), Path)["test"]
    assert [(e.text, e.text_b, e.label) for e in test] == [
        ("Is aspirin an NSAID?", "Aspirin is an NSAID. It inhibits COX enzymes.", "yes"),
        ("Is insulin a lipid?", "Insulin is a peptide.", "no")]


def test_a_blank_gold_answer_never_matches_and_its_question_still_counts(tmp_path, caplog):
    """BioASQ's official 4B5_golden.json has a factoid whose exact_answer is [[" "]]: scored as the official
    evaluator scores it, with a warning naming the question, not a refusal of the file."""
    from bioray.tasks.metrics import factoid_scores

    path = _write(tmp_path / "4B5_golden.json", _broken(lambda q: q[1].update(exact_answer=[[" "]])))
    with caplog.at_level(logging.WARNING, logger="bioray.tasks.formats.bioasq"):
        test = load_splits(_entry(task="qa_factoid", format="bioasq", train=str(path), test=str(path)), Path)["test"]
    assert [e.question_id for e in test].count(F2) == 1 and test[-1].gold == [[]]
    assert f"{path}: questions[1].exact_answer[0]: a blank gold answer" in caplog.text
    # p53 would have been right: the blank question scores 0, and it counts (one of two questions)
    assert factoid_scores([["BRCA1"], []], [["BRCA1"], ["p53"]])["strict_accuracy"] == 0.5


def _broken(change) -> dict:
    tree = _official()
    change(tree["questions"])
    return tree


@pytest.mark.parametrize("tree, task, message", [
    (_broken(lambda q: q[0].update(exact_answer="BRCA1")), "qa_factoid",
     r"questions\[0\]\.exact_answer: expected a non-empty list of synonyms .* for a factoid question, got \"BRCA1\""),
    (_broken(lambda q: q[1].update(exact_answer=[["p53"], 53])), "qa_factoid",
     r"questions\[1\]\.exact_answer\[1\]: expected a synonym \(a string\) or a non-empty list of synonyms \(strings\), "
     r"got 53"),
    (_broken(lambda q: q[2].update(exact_answer=[["aspirin"], []])), "qa_list",
     r"questions\[2\]\.exact_answer\[1\]: expected a synonym"),
    (_broken(lambda q: q[3].update(exact_answer="maybe")), "qa_yesno",
     r"questions\[3\]\.exact_answer: expected \"yes\" or \"no\" for a yesno question, got \"maybe\""),
    (_broken(lambda q: q[0].pop("exact_answer")), "qa_factoid",
     r"questions\[0\]\.exact_answer: missing \(a test file without answers\? point `test` at BioASQ's golden JSON\)"),
    (_broken(lambda q: q[4].update(type="opinion")), "qa_factoid",
     r"questions\[4\]\.type: expected one of factoid, list, yesno, summary, got \"opinion\""),
    (_broken(lambda q: q[0]["snippets"][1].pop("text")), "qa_factoid",
     r"questions\[0\]\.snippets\[1\]\.text: missing; expected the snippet text"),
    (_broken(lambda q: q[1].update(snippets=[])), "qa_factoid",
     r"questions\[1\]\.snippets: expected a non-empty list of snippets, got \[\]"),
    (_broken(lambda q: q[3].update(snippets=["Aspirin is an NSAID."])), "qa_yesno",
     r"questions\[3\]\.snippets\[0\]: expected an object \(one of the snippets\)"),
    (_broken(lambda q: q[1].update(id=F1)), "qa_factoid",
     rf"questions\[1\]\.id: '{F1}' is also the id of questions\[0\]; expected unique ids"),
    (_broken(lambda q: q[0].update(body="")), "qa_factoid", r"questions\[0\]\.body: expected the question text"),
    ({"questions": [_official()["questions"][5]]}, "qa_factoid", r"no factoid questions \(has \{'summary': 1\}\)"),
    ({"data": []}, "qa_factoid", r"not BioASQ JSON: expected an object with a `questions` list \(it has SQuAD `data`"),
    ('{"questions": [', "qa_factoid", r"not BioASQ JSON \(Expecting value at line 1 column 16\)"),
])
def test_bad_official_json_names_file_json_path_and_what_was_expected(tmp_path, tree, task, message):
    path = _write(tmp_path / "bad.json", tree)
    with pytest.raises(DatasetError, match=rf"bad\.json: .*{message}"):
        load_splits(_entry(task=task, format="bioasq", train=str(path), test=str(path)), Path)


# --- BioBERT's SQuAD files -------------------------------------------------------------------------------------------

def test_squad_snippets_group_by_question_id_with_gold_from_the_golden_file(tmp_path):
    train = _write(tmp_path / "train.json", _squad([(f"{F1}_000", BRCA, "Carriers of BRCA1.", [("BRCA1", 12)]),
                                                    (f"{F1}_001", BRCA, "brca1 again.", [("brca1", 0)])]))
    test = _write(tmp_path / "test.json", _squad(SQUAD_TEST))
    golden = _write(tmp_path / "6B1_golden.json", _official())
    entry = _entry(task="qa_factoid", train=str(train), test=str(test), test_gold=str(golden))
    assert catalog.entry_problems(entry, "finetune.datasets[0]") == []
    assert Path(golden) in catalog.format_for(entry).files(entry, Path)  # a key of the stages' fingerprints
    splits = load_splits(entry, Path)
    assert [(e.qid, e.question_id) for e in splits["test"]] == [(f"{F1}_000", F1), (f"{F1}_001", F1), (f"{F2}_000", F2)]
    assert [e.gold for e in splits["test"]] == [[["BRCA1", "breast cancer 1"]]] * 2 + [[["p53", "TP53"]]]
    assert [e.gold for e in splits["train"]] == [[["BRCA1", "brca1"]]] * 2  # a file's answers: the synonyms


def test_squad_file_with_answers_is_its_own_gold(tmp_path):
    rows = [("q7", P53, "p53 and TP53.", [("p53", 0), ("TP53", 8)]), ("q8_000", BRCA, "BRCA1 here.", []),
            ("q8_001", BRCA, "Or BRCA1.", [("BRCA1", 3)])]
    test = _write(tmp_path / "test.json", _squad(rows))
    splits = load_splits(_entry(task="qa_list", train=str(test), test=str(test)), Path)
    assert [e.gold for e in splits["test"]] == [[["p53"], ["TP53"]], [["BRCA1"]], [["BRCA1"]]]


@pytest.mark.parametrize("rows, golden, message", [
    (SQUAD_TEST, None, r"test\.json: no gold answers in any question \(BioBERT's SQuAD test files carry none\): "
                       r"give BioASQ's golden JSON as the entry's `test_gold`"),
    ([SQUAD_TEST[0], (f"{F1}_001", BRCA, "Carriers of BRCA1.", [("BRCA1", 12)]),  # gold in one of F1's snippets:
      (f"{F2}_000", P53, "p53 is the guardian.", [("p53", 0)])], None, None),       # every question has gold
    ([SQUAD_TEST[0], (f"{F2}_000", P53, "p53 is the guardian.", [("p53", 0)])], None,
     rf"test\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\]: question '{F1}' has no gold answer in any of its snippets"),
    (SQUAD_TEST + [("5a6d186db750ff4455000099_000", P53, "other", [])], "golden",
     r"qas\[0\]: question '5a6d186db750ff4455000099' has no gold answer in .*golden\.json \(no factoid question"),
    (SQUAD_TEST[:2], "golden", rf"golden\.json: questions\[1\]: factoid question '{F2}' is not in .*test\.json: "
                               r"the official score counts it as unanswered"),
    ([(f"{F1}_000", BRCA, "x", []), (f"{F1}_001", P53, "y", [])], "golden",
     rf"qas\[0\]\.id: '{F1}_001' is a snippet of question '{F1}' \(BioBERT's `<question id>_<nnn>`\), but asks "
     r"another question than .*paragraphs\[0\]"),
])
def test_a_question_without_gold_is_an_error_never_a_zero(tmp_path, rows, golden, message):
    test = _write(tmp_path / "test.json", _squad(rows))
    gold = {"test_gold": str(_write(tmp_path / "golden.json", _official()))} if golden else {}
    entry = _entry(task="qa_factoid", train=str(test), test=str(test), **gold)
    if message is None:
        assert len(load_splits(entry, Path)["test"]) == 3
        return
    with pytest.raises(DatasetError, match=message):
        load_splits(entry, Path)


def test_squad_reader_pointed_at_an_official_file_says_what_it_got(tmp_path):
    golden = _write(tmp_path / "7B1_golden.json", _official())
    with pytest.raises(DatasetError, match=r"7B1_golden\.json: has `questions`, not SQuAD `data`: this is BioASQ's "
                                           r"official JSON; use format: bioasq"):
        load_splits(_entry(task="qa_factoid", train=str(golden), test=str(golden)), Path)


@pytest.mark.parametrize("answer, message", [
    ({"text": "p53", "answer_start": "0"}, r"qas\[0\]\.answers\[0\]\.answer_start: expected a character offset"),
    ({"text": "p53", "answer_start": 4}, r"qas\[0\]\.answers\[0\]: answer 'p53' is not at offset 4 of the context"),
    ({"answer_start": 0}, r"qas\[0\]\.answers\[0\]\.text: missing; expected the answer text"),
])
def test_bad_squad_files_name_the_json_path(tmp_path, answer, message):
    tree = _squad([("q1", P53, "p53 is the guardian.", [])])
    tree["data"][0]["paragraphs"][0]["qas"][0]["answers"] = [answer]
    path = _write(tmp_path / "bad.json", tree)
    with pytest.raises(DatasetError, match=rf"bad\.json: data\[0\]\.paragraphs\[0\]\.{message}"):
        load_splits(_entry(task="qa_factoid", train=str(path), test=str(path)), Path)


def test_entries_reading_bioasq_are_checked(tmp_path):
    assert catalog.entry_problems(_entry(task="qa_yesno", format="bioasq", train="a", test="b"), "d") == []
    assert catalog.entry_problems(_entry(task="qa_list", format="bioasq", train="a", test="b"), "d") == []
    problems = catalog.entry_problems(_entry(task="qa_factoid", format="bioasq", train="a", test="b", test_gold="g"),
                                       "d")
    assert problems == ["d.test_gold: unknown key for format 'bioasq' (its options: none; it is an option of squad)"]
    assert catalog.entry_problems(_entry(task="ner", format="bioasq", train="a", test="b"), "d")[0].startswith(
        "d.format: 'bioasq' does not fit task 'ner'")


def test_an_untrained_model_answers_each_question_from_all_its_snippets(tmp_path):
    """predict -> per-snippet probabilities -> per-question answers, on a tiny random encoder (a forward
    pass only: nothing is trained). A long snippet is read in several windows."""
    import torch
    from transformers import AutoTokenizer

    from bioray.data.vocab import train_wordpiece
    from bioray.model.encoder import build_mlm_model

    texts = ["Mutations of brca1 raise the risk.", "p53 is the guardian of the genome."] * 10
    tokenizer = train_wordpiece(texts, 120, lowercase=True, min_frequency=1)
    torch.manual_seed(0)
    build_mlm_model(len(tokenizer), tokenizer.pad_token_id, layers=1, hidden=32, heads=2, intermediate=64,
                    max_position=128, dropout=0.0).save_pretrained(str(tmp_path / "encoder"))
    tokenizer.save_pretrained(str(tmp_path / "encoder"))
    path = _write(tmp_path / "golden.json", _official())
    entry = _entry(task="qa_factoid", format="bioasq", train=str(path), test=str(path))
    test = load_splits(entry, Path)["test"]
    test[0].context = " ".join([test[0].context] * 20)  # longer than one 96-token window
    task = catalog.task_for(entry)
    model = task.build_model(str(tmp_path / "encoder"), [])
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "encoder"))
    assert len(task.encode(test[:1], tokenizer, [], 96)) > 1
    predictions = task.predict(model, tokenizer, test, [], 96, 2)
    assert len(predictions) == len(test)  # one per snippet
    for example, found in zip(test, predictions):
        assert found and sum(found.values()) == pytest.approx(1.0)
        assert all(text in example.context for text in found)
    answers = task.answers(test, predictions)
    assert list(answers) == [F1, F2] and all(1 <= len(a) <= 5 for a in answers.values())
    assert set(task.score(test, predictions, [])) == {"strict_accuracy", "lenient_accuracy", "mrr"}

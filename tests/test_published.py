"""A score is only placed beside published numbers it can be compared with: `benchmark:` names a known
entry (or `none`) of the same task type, metric and protocol; relation entries state their metric; the
BLURB-style macro counts BLURB-protocol entries only and names the BLURB datasets it lacks."""

from __future__ import annotations

import pytest

from bioray.config import ConfigError, DatasetConfig
from bioray.pipeline.inputs import load_checked
from bioray.tasks.catalog import TASK_TYPES, task_for
from bioray.tasks.published import benchmark_of, published
from bioray.tasks.report import build_report

# every dataset of the BioBERT paper's NER/RE/QA tables and of BLURB's table, by its entry here
BIOBERT_TABLES = ["ncbi-disease", "i2b2-2010", "bc5cdr-disease", "bc5cdr-chem", "bc4chemd", "bc2gm", "jnlpba-biobert",
                  "linnaeus", "species-800", "gad-10fold", "euadr-10fold", "chemprot-biobert", "bioasq-4b-factoid",
                  "bioasq-5b-factoid", "bioasq-6b-factoid"]
BLURB_TABLE = ["bc5cdr-chem", "bc5cdr-disease", "ncbi-disease", "bc2gm", "jnlpba", "ebm-pico", "chemprot", "ddi", "gad",
               "biosses", "hoc", "pubmedqa", "bioasq-yesno"]


def test_published_numbers_cover_both_papers_tables_with_their_protocols():
    reference = published()
    benchmarks = reference["benchmarks"]
    assert set(BIOBERT_TABLES + BLURB_TABLE) <= set(benchmarks)
    assert reference["blurb_datasets"] == BLURB_TABLE
    for name, entry in benchmarks.items():
        assert entry["task"] in [*TASK_TYPES, "pico"] and entry["metric"] and entry["protocol"], name
        numbers = [v for source in ("blurb", "biobert") for v in entry.get(source, {}).values()]
        assert numbers and all(0 < v <= 100 for v in numbers), name
        # the macro counts BLURB's protocol only: an entry in it carries BLURB's numbers and no folds
        assert ("blurb_task" in entry) == (name in BLURB_TABLE), name
        assert "blurb_task" not in entry or ("blurb" in entry and "folds" not in entry), name
    assert benchmarks["gad-10fold"]["folds"] == 10 and "folds" not in benchmarks["gad"]


def _entry(**fields) -> DatasetConfig:
    return DatasetConfig.model_validate({"name": "x", "train": "NCBI-disease/biobert/train.tsv",
                                         "test": "NCBI-disease/biobert/test.tsv", "task": "ner", **fields})


@pytest.mark.parametrize(("fields", "message"), [
    ({"benchmark": "ncbi"}, r"datasets\[0\] \(x\)\.benchmark: unknown benchmark 'ncbi' \(known: bc2gm, .*; or `none`"),
    ({"benchmark": "chemprot"}, r"benchmark 'chemprot' is a relation task, not ner"),
    ({"task": "relation", "metric": "accuracy", "benchmark": "chemprot", "columns": ["sentence", "label"]},
     r"benchmark 'chemprot' publishes f1, this entry is scored by accuracy; set `metric: f1` or `benchmark: none`"),
    ({"task": "relation", "columns": ["sentence", "label"], "benchmark": "none"},
     r"finetune\.datasets\[0\] \(x\)\.negative_label: a relation entry states its metric"),
    ({"metric": "pearson"}, r"datasets\[0\] \(x\)\.metric: 'pearson' is not a metric of task 'ner' \(expected one of "
                            r"\['f1'\]\)"),
])
def test_an_entry_that_cannot_be_compared_is_a_config_error(fields, message, write_workflow, quickstart_tree):
    quickstart_tree["finetune"]["datasets"] = [_entry(**fields).model_dump(exclude_none=True)]
    with pytest.raises(ConfigError, match=message):
        load_checked(write_workflow(quickstart_tree))


def test_the_benchmark_defaults_to_a_known_name_else_none():
    assert benchmark_of(_entry(name="ncbi-disease")) == "ncbi-disease"
    assert benchmark_of(_entry(name="my-corpus")) is None
    assert benchmark_of(_entry(name="ncbi-disease", benchmark="none")) is None


def test_a_relation_entry_is_ranked_by_the_metric_it_states():
    gold = ["false", "false", "CPR:3", "CPR:3", "CPR:4", "false"]
    predicted = ["false", "CPR:3", "CPR:3", "false", "CPR:4", "false"]
    texts = [type("E", (), {"label": g})() for g in gold]
    papers = task_for(_entry(task="relation", negative_label="false"))
    # by hand, positives only: predicted positive 3, of which right 2; gold positive 3, found 2
    assert papers.metric == "f1"
    assert papers.score(texts, predicted, [])["f1"] == pytest.approx(2 / 3)
    chosen = task_for(_entry(task="relation", metric="accuracy"))
    scores = chosen.score(texts, predicted, [])
    assert chosen.metric == "accuracy" and scores["accuracy"] == pytest.approx(4 / 6) and "f1" not in scores


def test_the_macro_counts_blurb_protocol_entries_only_and_names_what_is_missing():
    def score(dataset, metric, value):
        return {"dataset": dataset, "seed": 1, "metrics": {metric: value}}

    scores = [score("ncbi", "ner/test_f1", 0.8), score("gad-cv", "relation/test_f1", 0.7),
              score("mine", "ner/test_f1", 0.9)]
    report = build_report({"ncbi": {"task": "ner", "metric": "f1", "benchmark": "ncbi-disease"},
                           "gad-cv": {"task": "relation", "metric": "f1", "benchmark": "gad-10fold"},
                           "mine": {"task": "ner", "metric": "f1", "benchmark": None}}, scores)
    assert report["macro"]["bioray"] == pytest.approx(80.0)  # NCBI-disease alone: 10-fold GAD is not BLURB's
    assert report["macro_task_types"] == ["ner"]
    assert report["missing_blurb_datasets"] == [d for d in BLURB_TABLE if d != "ncbi-disease"]
    rows = {row["dataset"]: row for row in report["rows"]}
    assert rows["gad-cv"]["published"]["biobert/bert"] == 79.29
    assert rows["gad-cv"]["published"]["blurb/pubmedbert"] is None
    assert all(value is None for value in rows["mine"]["published"].values())

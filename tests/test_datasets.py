"""Every dataset of ../shared/data loads through its registry entry in workflows/blurb.yaml, and
bad files fail with the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bioray.config import ConfigError, DatasetConfig
from bioray.pipeline.inputs import load_checked
from bioray.tasks.examples import DatasetError
from bioray.tasks.splits import load_splits
from tests.support.data import needs_blurb_data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def suite(data_root):
    import os

    os.environ.setdefault("BIORAY_DATA_ROOT", str(data_root))
    return load_checked(REPO / "workflows" / "blurb.yaml")


# (dataset, expected train/dev/test sizes) — counts from each dataset's PROVENANCE.md, or the documented split
EXPECTED = {
    "ncbi-disease": None, "ncbi-disease-pubtator": (5367, 920, 933), "bc5cdr-chem": (4560, 4581, 4797),
    "jnlpba": (14690, 3856, 3856),
    "jnlpba-typed": (1939, None, 4260 - 100),  # test: 4,260 lines incl. -DOCSTART- separators (checked below)
    "chemprot": (16521, 10361, 14396), "chemprot-scibert": (4169, 2427, 3469),
    "chemprot-blue": (6570, 11820, 3458), "biosses": (70, 16, 14), "hoc": (1297, 185, 370), "pubmedqa": (450, 50, 500),
}


@needs_blurb_data
def test_every_shared_dataset_loads_through_its_registry_entry(suite):
    names = {d.name for d in suite.finetune.datasets}
    assert names == set(EXPECTED)
    for dataset in suite.finetune.datasets:
        splits = load_splits(dataset, suite.data_path)
        assert splits["train"] and splits["test"], dataset.name
        expected = EXPECTED[dataset.name]
        if expected and dataset.name != "jnlpba-typed":
            sizes = (len(splits["train"]), len(splits.get("dev", [])), len(splits["test"]))
            assert sizes == expected, dataset.name


@needs_blurb_data
def test_splits_the_datasets_without_one_deterministically(suite):
    by_name = {d.name: d for d in suite.finetune.datasets}
    hoc, again = (load_splits(by_name["hoc"], suite.data_path) for _ in range(2))
    assert [e.where for e in hoc["test"]] == [e.where for e in again["test"]]
    assert not {e.where for e in hoc["test"]} & {e.where for e in hoc["train"]}
    labels = {label for e in hoc["train"] for label in e.label}
    assert len(labels) == 10  # the ten hallmarks, at abstract level
    pubmedqa = load_splits(by_name["pubmedqa"], suite.data_path)
    assert {e.label for e in pubmedqa["test"]} == {"yes", "no", "maybe"}
    test_questions = {e.text for e in pubmedqa["test"]}
    assert not test_questions & {e.text for e in pubmedqa["train"] + pubmedqa["dev"]}


@needs_blurb_data
def test_typed_ner_with_docstart_lines(suite):
    entry = next(d for d in suite.finetune.datasets if d.name == "jnlpba-typed")
    test = load_splits(entry, suite.data_path)["test"]
    assert not any(w == "-DOCSTART-" for s in test for w in s.words)
    assert sum(t.startswith("B-") for s in test for t in s.tags) == 8662  # BLURB's test mentions


@needs_blurb_data
def test_pubtator_release_matches_biobert_preprocessing(suite):
    """NCBI-disease from its PubTator files: every annotation becomes one entity, and the test set
    has the same 960 mentions and (within 2 words) the same words as BioBERT's preprocessed file."""
    by_name = {d.name: d for d in suite.finetune.datasets}
    pubtator = load_splits(by_name["ncbi-disease-pubtator"], suite.data_path)
    biobert = load_splits(by_name["ncbi-disease"], suite.data_path)
    for split, release in (("train", "train"), ("dev", "develop"), ("test", "test")):
        source = suite.data_path(f"NCBI-disease/original_pubtator/NCBI{release}set_corpus.txt")
        annotations = sum(1 for line in source.read_text().splitlines() if line.count("\t") >= 4)
        assert sum(s.tags.count("B") for s in pubtator[split]) == annotations, split
    assert sum(s.tags.count("B") for s in biobert["test"]) == 960
    words = sum(len(s.words) for s in pubtator["test"])
    assert abs(words - sum(len(s.words) for s in biobert["test"])) <= 2
    assert {t for s in pubtator["test"] for t in s.tags} == {"B", "I", "O"}


PUBTATOR = ("1|t|Familial hypercholesterolemia in Ireland.\n"
            "1|a|Some patients. With breast-ovarian cancer syndrome.\n"
            "1\t9\t29\thypercholesterolemia\tSpecificDisease\tD006938\n"
            "1\t69\t92\tovarian cancer syndrome\tSpecificDisease\tD010051\n\n")


def test_pubtator_words_tags_and_sub_word_mentions(tmp_path):
    from bioray.tasks.formats.pubtator import read_pubtator

    path = tmp_path / "tiny.txt"
    path.write_text(PUBTATOR)
    sentences = read_pubtator(path)
    assert [s.words for s in sentences] == [["Familial", "hypercholesterolemia", "in", "Ireland", "."],
                                            ["Some", "patients", "."],
                                            ["With", "breast", "-", "ovarian", "cancer", "syndrome", "."]]
    assert sentences[0].tags == ["O", "B-SpecificDisease", "O", "O", "O"]
    # the mention starts at 'ovarian', inside the hyphenated word: the tags follow the mention's words
    assert sentences[2].tags == ["O", "O", "O", "B-SpecificDisease", "I-SpecificDisease", "I-SpecificDisease", "O"]
    assert read_pubtator(path, {"SpecificDisease": ""})[0].tags == ["O", "B", "O", "O", "O"]


@pytest.mark.parametrize("content, types, message", [
    (PUBTATOR.replace("\t9\t29", "\t8\t28"), None, r"tiny\.txt:3: offsets 8-28 hold ' hypercholesterolemi'"),
    (PUBTATOR.replace("\t69\t92\t", "\t69\t"), None, r"tiny\.txt:4: expected 'PMID<TAB>start<TAB>end"),
    (PUBTATOR, {"DiseaseClass": ""}, r"tiny\.txt:3: entity type 'SpecificDisease' is not in the entry's"),
    ("1|a|an abstract without a title\n", None, r"tiny\.txt:1: expected a 'PMID\|t\|title' line first"),
    ("", None, r"tiny\.txt: empty file"),
])
def test_bad_pubtator_files_name_file_and_line(tmp_path, content, types, message):
    from bioray.tasks.formats.pubtator import read_pubtator

    path = tmp_path / "tiny.txt"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_pubtator(path, types)


def _entry(**fields) -> DatasetConfig:
    return DatasetConfig.model_validate({"name": "x", **fields})


@pytest.mark.parametrize("content, fields, message", [
    ("Aspirin\tO\nno tag column here\n", {"task": "ner"}, r"bad\.tsv:2: expected 'token<TAB>tag'"),
    ("Aspirin\tX-drug\n", {"task": "ner"}, r"bad\.tsv:1: 'X-drug' is not an IOB tag"),
    ("", {"task": "ner"}, r"bad\.tsv: empty file"),
    ("Aspirin\tB-chemical\n", {"task": "ner", "labels": ["O", "B-disease", "I-disease"]},
     r"bad\.tsv:1: unknown label 'B-chemical'"),
    ("sentence\tlabel\nA binds B.\tCPR:4\nno label column\n", {"task": "relation"},
     r"bad\.tsv:3: expected 2 tab-separated columns"),
    ("sentence\tlabel\nA binds B.\tCPR:7\n", {"task": "relation", "labels": ["False", "CPR:4"]},
     r"bad\.tsv:2: unknown label 'CPR:7'"),
    ("A binds B.\tCPR:4\n", {"task": "relation"}, r"bad\.tsv:1: no header row naming 'sentence' and 'label'"),
    ("sentence1\tsentence2\tscore\na\tb\thigh\n", {"task": "similarity", "text_column": "sentence1",
                                                   "text_b_column": "sentence2", "label_column": "score"},
     r"bad\.tsv:2: expected a numeric score, got 'high'"),
    ('{"text": "A binds B."}\n', {"task": "relation", "format": "jsonl", "text_column": "text"},
     r"bad\.tsv:1: no column 'label'"),
    ('{"text": "A binds B.", "label": "CPR:4"}\n{"text": "x", "label": \n',
     {"task": "relation", "format": "jsonl", "text_column": "text"}, r"bad\.tsv:2: not JSON"),
])
def test_bad_files_fail_with_file_and_line(tmp_path, content, fields, message):
    bad = tmp_path / "bad.tsv"
    bad.write_text(content)
    entry = _entry(train=str(bad), test=str(bad), **fields)
    with pytest.raises(DatasetError, match=message):
        load_splits(entry, Path)


def test_registry_entries_are_checked_before_anything_runs(write_workflow, quickstart_tree):
    quickstart_tree["finetune"]["datasets"][0].update(task="similarity", format="conll")
    entry = r"finetune\.datasets\[0\] \(ncbi-disease\)"  # every error names the entry
    with pytest.raises(ConfigError, match=rf"{entry}\.format: 'conll' does not fit task 'similarity'"):
        load_checked(write_workflow(quickstart_tree))
    quickstart_tree["finetune"]["datasets"][0].update(task="doc_classification", format="hoc")
    with pytest.raises(ConfigError, match=rf"{entry}\.path: format 'hoc' reads one folder: set `path`"):
        load_checked(write_workflow(quickstart_tree))
    quickstart_tree["finetune"]["datasets"][0].update(task="nonsense", format=None)
    with pytest.raises(ConfigError, match=rf"{entry}\.task: unknown task type 'nonsense' \(known: ner,"):
        load_checked(write_workflow(quickstart_tree))


def test_a_directory_where_a_file_belongs_says_so(tmp_path):
    entry = _entry(task="ner", train=str(tmp_path), test=str(tmp_path))
    with pytest.raises(DatasetError, match="a directory, where a file was expected"):
        load_splits(entry, Path)


def test_k_fold_entries_gad_style(tmp_path, write_workflow, quickstart_tree):
    """BioBERT's GAD/EU-ADR layout: a folder per fold, train.tsv without a header and test.tsv with
    `index sentence label`; one fine-tune/evaluate pair per fold and seed."""
    from bioray.pipeline.plan import build_plan

    for fold in ("1", "2"):
        (tmp_path / fold).mkdir()
        (tmp_path / fold / "train.tsv").write_text(f"@GENE$ variants and @DISEASE$ risk fold {fold}.\t1\n"
                                                   "No link between @GENE$ and @DISEASE$.\t0\n")
        (tmp_path / fold / "test.tsv").write_text("index\tsentence\tlabel\n0\t@GENE$ is linked to @DISEASE$.\t1\n")
    entry = _entry(task="relation", folds=[str(tmp_path / "1"), str(tmp_path / "2")], columns=["sentence", "label"],
                   negative_label="0")
    second = load_splits(entry, Path, fold=1)
    assert [e.label for e in second["train"]] == ["1", "0"] and "fold 2" in second["train"][0].text
    assert [e.text for e in second["test"]] == ["@GENE$ is linked to @DISEASE$."]

    quickstart_tree["finetune"]["datasets"].append(
        {"name": "gad", "task": "relation", "folds": [str(tmp_path / "1"), str(tmp_path / "2")],
         "columns": ["sentence", "label"], "negative_label": "0"})
    with pytest.raises(ConfigError, match=r"datasets\[1\] \(gad\)\.name: benchmark 'gad' is a single split, this "
                                          r"entry 2-fold "
                                          r"cross-validation: not comparable; set `benchmark:` to another protocol's "
                                          r"entry \(gad-10fold \(10 folds\)\) or `none`"):
        load_checked(write_workflow(quickstart_tree))
    quickstart_tree["finetune"]["datasets"][-1]["benchmark"] = "none"
    quickstart_tree["finetune"]["seeds"] = [1, 2]
    names = [n.name for n in build_plan(load_checked(write_workflow(quickstart_tree)))]
    assert {f"finetune/gad/fold-{k}/seed-{s}" for k in (1, 2) for s in (1, 2)} <= set(names)
    assert "evaluate/gad/fold-2/seed-1" in names


def test_report_averages_folds_then_seeds():
    from bioray.tasks.report import aggregate, build_report

    def score(dataset: str, seed: int, metric: str, value: float) -> dict:
        return {"dataset": dataset, "seed": seed, "metrics": {metric: value}}

    evaluations = [score("gad", 1, "relation/test_f1", 0.8), score("gad", 1, "relation/test_f1", 0.6),  # two folds
                   score("gad", 2, "relation/test_f1", 0.9), score("gad", 2, "relation/test_f1", 0.7),
                   score("ncbi-disease", 1, "ner/test_f1", 0.85)]
    summary = aggregate(evaluations)["gad"]["relation/test_f1"]
    assert summary["mean"] == pytest.approx(0.75) and summary["seeds"] == 2
    assert summary["std"] == pytest.approx(0.0707106, rel=1e-4)  # seed means 0.7 and 0.8
    report = build_report({"gad": {"task": "relation", "metric": "f1", "benchmark": "gad"},
                           "ncbi-disease": {"task": "ner", "metric": "f1", "benchmark": "ncbi-disease"}}, evaluations)
    # BLURB-style macro: mean over task types (ner 85, relation 75), published models over the same datasets
    assert report["macro"]["bioray"] == pytest.approx(80.0)
    assert report["macro"]["blurb/pubmedbert"] == pytest.approx((87.82 + 83.96) / 2)
    assert "similarity" in report["missing_task_types"]
    # a second entry on the same benchmark (NCBI-disease from PubTator) is reported but counted once
    evaluations.append(score("ncbi-pubtator", 1, "ner/test_f1", 0.55))
    report = build_report({"gad": {"task": "relation", "metric": "f1", "benchmark": "gad"},
                           "ncbi-disease": {"task": "ner", "metric": "f1", "benchmark": "ncbi-disease"},
                           "ncbi-pubtator": {"task": "ner", "metric": "f1", "benchmark": "ncbi-disease"}}, evaluations)
    assert report["macro"]["bioray"] == pytest.approx(80.0)
    assert report["rows"][2]["bioray"]["mean"] == pytest.approx(55.0)

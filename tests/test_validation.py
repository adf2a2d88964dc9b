"""Broken datasets are found before any stage runs: `bioray validate` and the commands that run stages
read every split of every registered dataset (all folds) and list every problem at once, each naming
the file and line; datasets may live under their own `finetune.data_root`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bioray.cli import main
from bioray.config import ConfigError
from bioray.pipeline.inputs import load_checked

CONLL = "Aspirin\tB\ncauses\tO\nbleeding\tO\n\nNo\tO\nharm\tO\n"


def _plant(root: Path) -> list[dict]:
    """Three datasets under `root`, with four problems in three files of two datasets."""
    (root / "ner").mkdir(parents=True)
    (root / "ner" / "train.tsv").write_text(CONLL)
    (root / "ner" / "test.tsv").write_text(CONLL + "\nbad\tB-Chemical\n")  # a tag outside `labels`
    (root / "re").mkdir()
    (root / "re" / "train.tsv").write_text("A binds @CHEM$.\tCPR:4\nNo link.\tfalse\n")  # no header, no `columns`
    (root / "re" / "test.tsv").write_text("sentence\tlabel\nA binds @CHEM$.\tCPR:4\nA\tb\tc\n")  # line 3: 3 columns
    for fold in ("1", "2"):
        (root / "gad" / fold).mkdir(parents=True)
        (root / "gad" / fold / "train.tsv").write_text("@GENE$ and @DISEASE$.\t1\nNo @GENE$ link.\t0\n")
        (root / "gad" / fold / "test.tsv").write_text("index\tsentence\tlabel\n0\t@GENE$ in @DISEASE$.\t1\n")
    (root / "gad" / "2" / "test.tsv").write_text("index\tsentence\tlabel\n0\t@GENE$ in @DISEASE$.\n")
    return [
        {"name": "toy-ner", "task": "ner", "train": "ner/train.tsv", "test": "ner/test.tsv", "labels": ["B", "I", "O"]},
        {"name": "toy-re", "task": "relation", "train": "re/train.tsv", "test": "re/test.tsv",
         "negative_label": "false"},
        {"name": "toy-gad", "task": "relation", "folds": ["gad/1", "gad/2"], "columns": ["sentence", "label"],
         "negative_label": "0"},
    ]


def test_every_dataset_problem_is_listed_before_anything_runs(tmp_path, write_workflow, quickstart_tree):
    quickstart_tree["finetune"]["datasets"] = _plant(tmp_path / "bench")
    quickstart_tree["finetune"]["data_root"] = str(tmp_path / "bench")
    workflow = write_workflow(quickstart_tree)
    load_checked(workflow)  # reading datasets is for validate and run: `status` stays instant

    with pytest.raises(ConfigError) as raised:
        load_checked(workflow, read_datasets=True)
    lines = str(raised.value).splitlines()
    bench = tmp_path / "bench"
    expected = [
        f"finetune.datasets[0] (toy-ner): {bench}/ner/test.tsv:8: unknown label 'B-Chemical'",
        f"finetune.datasets[1] (toy-re): {bench}/re/train.tsv:1: no header row naming 'sentence' and 'label'",
        f"finetune.datasets[1] (toy-re): {bench}/re/test.tsv:3: expected 2 tab-separated columns",
        f"finetune.datasets[2] (toy-gad): fold 2: {bench}/gad/2/test.tsv:2: expected 3 tab-separated columns",
    ]
    for want in expected:
        assert sum(line.strip().startswith(want) for line in lines) == 1, (want, lines)
    assert len(lines) == 1 + len(expected)  # the heading, then exactly these: fold 1 and the rest are fine


def test_validate_names_the_problems_and_exits_2(tmp_path, write_workflow, quickstart_tree):
    quickstart_tree["finetune"]["datasets"] = _plant(tmp_path / "bench")[2:]
    quickstart_tree["finetune"]["data_root"] = str(tmp_path / "bench")
    workflow = write_workflow(quickstart_tree)
    done = CliRunner().invoke(main, ["validate", str(workflow)])
    assert done.exit_code == 2 and "Traceback" not in done.output
    assert "fold 2: " in done.output and "gad/2/test.tsv:2: expected 3 tab-separated columns" in done.output

    (tmp_path / "bench" / "gad" / "2" / "test.tsv").write_text("index\tsentence\tlabel\n0\t@GENE$ in @DISEASE$.\t1\n")
    done = CliRunner().invoke(main, ["validate", str(workflow)])
    assert done.exit_code == 0 and ": ok (data_root " in done.output, done.output


def test_datasets_resolve_against_their_own_root(tmp_path, data_root, write_workflow, quickstart_tree):
    """finetune.data_root: a relative dataset path is found there (not under data_root); a folder given
    where a file belongs says so."""
    entries = _plant(tmp_path / "bench")
    quickstart_tree["finetune"]["datasets"] = [{**entries[0], "test": "ner/train.tsv"}]
    with pytest.raises(ConfigError,
                       match=rf"datasets\[0\] \(toy-ner\)\.train: file not found: {data_root}/ner/train\.tsv"):
        load_checked(write_workflow(quickstart_tree), read_datasets=True)  # default: the workflow's data_root

    quickstart_tree["finetune"]["data_root"] = str(tmp_path / "bench")
    config = load_checked(write_workflow(quickstart_tree), read_datasets=True)
    assert config.dataset_path("ner/train.tsv") == tmp_path / "bench" / "ner" / "train.tsv"
    assert config.data_path("corpus") != config.dataset_path("corpus")

    quickstart_tree["finetune"]["datasets"] = [{**entries[0], "test": "ner"}]
    with pytest.raises(ConfigError, match=r"toy-ner\): .*/bench/ner: a directory, where a file was expected"):
        load_checked(write_workflow(quickstart_tree), read_datasets=True)

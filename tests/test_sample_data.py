"""The quickstart from a bare clone: the repository's sample-data/ (real files, each with its source
and licence, 5 MB at most) is its data_root when neither BIORAY_DATA_ROOT nor ../shared/data exists,
and every input and dataset split of the quickstart reads from it."""

from __future__ import annotations

import shutil
from pathlib import Path

from bioray.config import load_workflow
from bioray.pipeline.inputs import load_checked
from bioray.tasks.splits import load_splits
from tests.support.cli import REPO

SAMPLE = REPO / "sample-data"


def test_every_sample_file_names_its_source_and_the_whole_is_small():
    files = [p for p in SAMPLE.rglob("*") if p.is_file() and p.name != "PROVENANCE.md"]
    provenance = (SAMPLE / "PROVENANCE.md").read_text()
    assert files and [p.name for p in files if p.name not in provenance] == []
    assert sum(p.stat().st_size for p in files) <= 5_000_000


def test_a_bare_clone_reads_the_sample(tmp_path, monkeypatch):
    clone = tmp_path / "clone"  # no ../shared/data beside it
    shutil.copytree(REPO / "workflows", clone / "workflows")
    shutil.copytree(SAMPLE, clone / "sample-data")
    monkeypatch.chdir(clone)
    monkeypatch.delenv("BIORAY_DATA_ROOT", raising=False)
    monkeypatch.setenv("BIORAY_WORKDIR", str(tmp_path / "work"))
    config = load_checked("workflows/quickstart.yaml", read_datasets=True)  # every input and split is read
    assert Path(config.data_root) == clone / "sample-data"
    splits = load_splits(config.finetune.datasets[0], config.dataset_path)
    assert [len(splits[name]) for name in ("train", "dev", "test")] == [1000, 250, 250]

    monkeypatch.setenv("BIORAY_DATA_ROOT", str(tmp_path / "elsewhere"))  # given, but not there: the next one
    (clone.parent / "shared" / "data").mkdir(parents=True)
    assert Path(load_workflow("workflows/quickstart.yaml").data_root) == clone.parent / "shared" / "data"

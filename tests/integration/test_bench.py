"""`bioray bench tokenize --json` end to end on a small real corpus: the numbers exist and are sane."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bioray.bench import bench_sources

REPO = Path(__file__).resolve().parents[2]


def test_corpus_files_are_classified_by_format(data_root):
    formats = {Path(s.path).name: s.format for s in bench_sources(data_root / "corpus")}
    assert formats["craft-pmc.jsonl.gz"] == "jsonl"
    assert formats["fatcat_pubmedsample_2019.xml.gz"] == "medline"
    assert sum(f == "pmc" for f in formats.values()) >= 60
    assert "README.md" not in formats and "removed_docs.tsv" not in formats


@pytest.mark.slow
def test_bench_tokenize_json(data_root):
    done = subprocess.run([sys.executable, "-m", "bioray.cli", "bench", "tokenize", "--data", str(data_root / "pubmed-raw"),
                           "--json"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("cores", "raw_tokens_per_s", "raw_mb_per_s", "pipeline_tokens_per_s", "ratio", "ingest_mb_per_s",
                "fill_ratio", "peak_rss_mb"):
        assert result[key] > 0, key
    assert result["documents"] > 700 and 0 < result["fill_ratio"] <= 1


@pytest.mark.slow
def test_bench_pretrain_json(data_root):
    done = subprocess.run([sys.executable, "-m", "bioray.cli", "bench", "pretrain", "--data",
                           str(data_root / "pubmed-raw" / "abstracts_one_per_line"), "--tokens", "20000", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("bioray_tokens_per_s", "baseline_tokens_per_s", "ratio", "model_params"):
        assert result[key] > 0, key
    assert min(result["real_tokens"].values()) >= 20000  # each side trained on at least the budget
    assert result["fill_ratio"]["bioray"] > 0.99 > result["fill_ratio"]["baseline"]  # packing vs padding


@pytest.mark.slow
def test_bench_finetune_json(data_root):
    done = subprocess.run([sys.executable, "-m", "bioray.cli", "bench", "finetune", "--size", "tiny", "--epochs", "1",
                           "--max-train", "300", "--seeds", "1,2", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("bioray_examples_per_s", "baseline_examples_per_s", "speedup"):
        assert result[key] > 0, key
    assert 0 <= result["bioray_f1"] <= 1 and 0 <= result["baseline_f1"] <= 1
    assert result["train_examples"] == 300 and result["test_sentences"] == 940  # NCBI-disease test set
    assert [run["seed"] for run in result["per_seed"]] == [1, 2]

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
                           str(data_root / "pubmed-raw" / "abstracts_one_per_line"), "--tokens", "20000",
                           "--seq-len", "128", "--seq-len", "512", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["device"] == "cpu" and result["peak_tflops"] is None and result["versions"]["torch"]
    assert [s["seq_len"] for s in result["settings"]] == [128, 512]  # both lengths in one run
    for setting in result["settings"]:
        assert setting["ratio"] > 0 and setting["flops_per_token"] > 0
        for side in ("bioray", "baseline"):
            row = setting[side]
            assert row["tokens_per_s"] > 0 and row["sequences_per_s"] > 0, side
            assert row["real_tokens"] >= 20000  # each side trained on at least the budget
            assert row["mfu"] is None and row["peak_memory_mb"] is None  # no GPU here: no peak to divide by
        assert setting["bioray"]["fill_ratio"] > 0.99 > setting["baseline"]["fill_ratio"]  # packing vs padding


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

"""The bench CLIs end to end on small real inputs: the JSON is consistent with itself and with the input."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bioray.bench.tokenize import bench_sources
from tests.support.data import pubmed_raw_records

REPO = Path(__file__).resolve().parents[2]


def test_corpus_files_are_classified_by_format(data_root):
    formats = {Path(s.path).name: s.format for folder in ("corpus", "pubmed-raw")
               for s in bench_sources(data_root / folder)}
    assert formats["medical-abstracts-tc.jsonl.gz"] == "jsonl"
    assert formats["fatcat_pubmedsample_2019.xml.gz"] == "medline"  # gzipped: told by its root element
    assert formats["biopython_pubmed1.xml"] == formats["pubmed-29768149.xml"] == "medline"
    assert formats["1471-2180-11-174.nxml"] == "pmc"
    assert all(formats[p.name] == "text" for p in (data_root / "pubmed-raw" / "abstracts_one_per_line").glob("*.txt"))
    assert "PROVENANCE.md" not in formats


@pytest.mark.extended
def test_bench_tokenize_json(data_root):
    done = subprocess.run([sys.executable, "-m", "bioray.cli", "bench", "tokenize",
                           "--data", str(data_root / "pubmed-raw"), "--scale", "1,2", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)  # stdout is the JSON alone
    cores = result["cores"]
    # the ratios are what they claim to be, from the figures beside them
    assert result["ratio"] == pytest.approx(result["pipeline_tokens_per_s"] / (cores * result["raw_tokens_per_s"]))
    assert result["ratio_to_all_cores"] == pytest.approx(result["pipeline_tokens_per_s"]
                                                         / result["raw_all_cores_tokens_per_s"])
    assert result["raw_tokens_per_s"] == max(result["raw_tokens_per_s_runs"])  # the best of the timings
    assert result["ingest_mb_per_s"] == pytest.approx(result["text_mb"] / result["ingest_seconds"])
    assert result["peak_rss_mb"] == max(result["peak_ingest_mb"], result["peak_tokenize_mb"]) > 100
    # the corpus it read (pubmed-raw's abstracts, MEDLINE XML and PMC articles), packed by the stream packer:
    # every sequence full but each batch's last (above 0.99 on the shared corpus; 0.990 measured on
    # sample-data's 300 abstracts, whose fewer sequences per batch weigh the last ones more)
    records = pubmed_raw_records(data_root)
    assert 0.95 * records < result["documents"] <= records and 0.98 < result["fill_ratio"] <= 1
    assert 0 < result["ratio"] and 0 < result["core_scaling"] <= 1.5
    # each scale in its own process and Ray session; the growth is the last peak over the first
    one, two = result["runs"]
    assert (one["scale"], two["scale"]) == (1, 2) and result["documents"] == one["documents"]
    assert one["documents"] < two["documents"] < 2 * one["documents"] + 1  # the XML samples are not copied
    assert result["memory_growth_ingest"] == pytest.approx(two["peak_ingest_mb"] / one["peak_ingest_mb"])
    assert result["memory_growth_tokenize"] == pytest.approx(two["peak_tokenize_mb"] / one["peak_tokenize_mb"])
    assert 0 < one["peak_driver_ingest_mb"] < one["peak_ingest_mb"]  # the driver is one of the processes summed
    assert two["memory_growth_ingest"] == result["memory_growth_ingest"] and one["memory_growth_ingest"] == 1
    assert two["ingest_s_per_gb"] == pytest.approx(two["ingest_seconds"] / (two["text_mb"] / 1000))
    assert result["tokenize_s_per_gb_growth"] == pytest.approx(two["tokenize_s_per_gb"] / one["tokenize_s_per_gb"])
    # ingest's scratch files follow the inputs (the same files, longer, at scale 2), not inputs x buckets
    assert one["input_files"] == two["input_files"] and one["ingest_buckets"] == two["ingest_buckets"] == 16
    assert two["ingest_scratch_files"] <= two["input_files"] + 2 * two["ingest_buckets"]


@pytest.mark.extended
def test_bench_pretrain_json(data_root):
    done = subprocess.run([sys.executable, "-m", "bioray.cli", "bench", "pretrain", "--data",
                           str(data_root / "pubmed-raw" / "abstracts_one_per_line"), "--tokens", "20000",
                           "--seq-len", "128", "--seq-len", "512", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)  # stdout is the JSON alone
    assert result["device"] == "cpu" and result["peak_tflops"] is None and result["versions"]["torch"]
    assert [s["seq_len"] for s in result["settings"]] == [128, 512]  # both lengths in one run
    assert result["model_size"] == "tiny" and result["model_vocab_size"] == result["vocab_size"]
    assert len(result["load_average"]["before"]) == len(result["load_average"]["after"]) == 3
    for setting in result["settings"]:
        bioray, baseline, packed = setting["bioray"], setting["baseline"], setting["packed_baseline"]
        assert setting["ratio"] == pytest.approx(bioray["tokens_per_s"] / baseline["tokens_per_s"])
        assert setting["packed_baseline_tokens_per_s"] == packed["tokens_per_s"] > 0
        assert setting["packed_ratio"] == pytest.approx(bioray["tokens_per_s"] / packed["tokens_per_s"])
        assert setting["flops_per_token"] > 0
        # the machine's own GEMM peak at the model's shapes, measured in this process with the arms' threads
        measured = setting["measured_peak"]
        assert setting["measured_peak_flops"] == measured["flops_per_s"] > 0
        assert measured["threads"] == result["torch_threads"] and measured["dtype"] == "float32"
        assert setting["peak_fraction"] == bioray["peak_fraction"]
        for row in (bioray, baseline, packed):
            assert row["real_tokens"] >= 20000  # each arm trained on at least the budget
            assert row["mfu"] is None and row["peak_memory_mb"] is None  # no GPU here: no peak to divide by
            assert row["achieved_flops"] == pytest.approx(row["tokens_per_s"] * setting["flops_per_token"])
            assert row["peak_fraction"] == pytest.approx(row["achieved_flops"] / setting["measured_peak_flops"])
        # where a few more bioray steps' time went, by kind of op
        kinds = setting["breakdown"]["kinds"]
        assert kinds["gemm"]["seconds"] > 0 and sum(k["fraction"] for k in kinds.values()) == pytest.approx(1.0)
        assert bioray["fill_ratio"] > 0.99 > baseline["fill_ratio"]  # packing vs padding
        assert packed["fill_ratio"] == 1.0  # run_mlm's grouping: full blocks, no padding at all
        assert packed["real_tokens"] == packed["sequences"] * setting["seq_len"]
        # real tokens per sequence: all T positions when packed, the sentence lengths when padded
        assert bioray["tokens_per_s"] / bioray["sequences_per_s"] == pytest.approx(
            setting["seq_len"] * bioray["fill_ratio"], rel=0.01)
        assert baseline["tokens_per_s"] / baseline["sequences_per_s"] < setting["seq_len"]


@pytest.mark.extended
def test_bench_finetune_json(data_root):
    done = subprocess.run([sys.executable, "-m", "bioray.cli", "bench", "finetune", "--size", "tiny", "--epochs", "1",
                           "--max-train", "300", "--seeds", "1,2", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)  # stdout is the JSON alone
    assert result["train_sentences"] == 300 and result["test_sentences"] == 940  # NCBI-disease test set
    runs = result["per_seed"]
    assert [run["seed"] for run in runs] == [1, 2]
    # parity on the same words: both sides train on, and are compared over, the sentences that fit
    assert all(0 < run["train_examples"] <= 300 and 0 < run["test_sentences_fitting"] <= 940 for run in runs)
    assert all(0 <= result[f"{side}_f1_all_test"] <= 1 for side in ("bioray", "baseline"))
    # the summary is the per-seed runs' means, and the difference and speed-up follow from them
    for side in ("bioray", "baseline"):
        assert result[f"{side}_f1"] == pytest.approx(sum(r[f"{side}_f1"] for r in runs) / 2)
        assert 0 <= result[f"{side}_f1"] <= 1 and result[f"{side}_examples_per_s"] > 0
    assert result["f1_difference_points"] == pytest.approx(100 * (result["bioray_f1"] - result["baseline_f1"]))
    assert result["speedup"] == pytest.approx(result["bioray_examples_per_s"] / result["baseline_examples_per_s"])



@pytest.mark.extended
def test_bench_finetune_workers_json(data_root):
    """--workers 2: run_finetune on a group of 2 Ray workers vs. the Trainer on 2 torchrun processes."""
    done = subprocess.run([sys.executable, "-m", "bioray.cli", "bench", "finetune", "--size", "tiny", "--epochs", "1",
                           "--data", str(data_root / "NCBI-disease" / "biobert"), "--max-train", "100",
                           "--seeds", "1,2", "--workers", "2", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)  # stdout is the JSON alone
    assert result["workers"] == 2 and [run["seed"] for run in result["per_seed"]] == [1, 2]
    # both sides' processes ran with the same torch threads, and said so
    assert result["bioray_torch_threads"] == result["baseline_torch_threads"] == result["torch_threads"] >= 1
    assert f"{result['torch_threads']} torch threads each" in done.stderr
    runs = result["per_seed"]
    for side in ("bioray", "baseline"):
        assert 0 <= result[f"{side}_f1"] <= 1 and 0 <= result[f"{side}_f1_all_test"] <= 1
        assert result[f"{side}_examples_per_s"] > 0
        # two seeds: the standard error is half their difference
        assert result[f"{side}_f1_se"] == pytest.approx(abs(runs[0][f"{side}_f1"] - runs[1][f"{side}_f1"]) / 2)
    differences = [100 * (run["bioray_f1"] - run["baseline_f1"]) for run in runs]
    assert result["f1_difference_points"] == pytest.approx(sum(differences) / 2)
    assert math.isfinite(result["f1_difference_se_points"])
    assert result["f1_difference_se_points"] == pytest.approx(abs(differences[0] - differences[1]) / 2, abs=1e-9)
    assert result["speedup"] == pytest.approx(result["bioray_examples_per_s"] / result["baseline_examples_per_s"])
    # bioray's seconds are its epochs, its start-up ends with its first step: both within run_finetune's wall time
    for run in runs:
        assert 0 < run["bioray_seconds"] < run["bioray_wall_seconds"]
        assert 0 < run["bioray_startup_seconds"] < run["bioray_wall_seconds"]


def test_bench_finetune_workers_must_split_the_batch():
    done = subprocess.run([sys.executable, "-m", "bioray.cli", "bench", "finetune", "--workers", "3",
                           "--batch-size", "32"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not divisible by --workers 3" in done.stderr


@pytest.mark.extended
@pytest.mark.needs_data("general-corpus/enwiki-2015-wikiextractor")
def test_bench_quality_json(data_root, tmp_path):
    """The quality bench's arms, curve and domain matrix on a tiny budget: the miniature recipe over a few
    hundred abstracts, its general-scratch arm over a few dozen Wikipedia articles."""
    import yaml

    tree = yaml.safe_load((REPO / "workflows" / "miniature.yaml").read_text())
    tree["data_root"] = str(data_root)
    tree["ingest"]["sources"] = [{"name": "abstracts", "format": "text", "path": "pubmed-raw/abstracts_one_per_line"}]
    tree["vocab"].update(size=2000, sample_docs=1000)
    tree["tokenize"]["heldout_fraction"] = 0.05
    tree["pretrain"].update(eval_every=10, log_every=10, checkpoint_every=1000)
    tree["finetune"].update(epochs=3, patience=1)
    tree["evaluate"]["heldout_words"] = 2000
    workflow = tmp_path / "quality.yaml"
    workflow.write_text(yaml.safe_dump(tree))
    per_step = tree["pretrain"]["global_batch_size"] * tree["tokenize"]["seq_len"]
    done = subprocess.run([sys.executable, "-m", "bioray.cli", "bench", "quality", "--workflow", str(workflow),
                           "--workdir", str(tmp_path / "work"), "--arms", "random,scratch,general-scratch",
                           "--budget-tokens", str(40 * per_step), "--seeds", "42,43", "--datasets", "ncbi-disease",
                           "--max-train", "200", "--max-docs", "60", "--json"], cwd=REPO, capture_output=True,
                          text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, lines[:5]  # --json: stdout is the JSON alone (Ray's worker logs go to stderr)
    result = json.loads(lines[0])
    assert result["pretrain_steps"] == 40
    rows = {row["arm"]: row for row in result["arms"]}
    assert set(rows) == {"random", "scratch", "general-scratch"}
    for row in rows.values():
        assert row["dataset"] == "ncbi-disease" and row["seeds"] == 2 and 0 <= row["f1_mean"] <= 1
        assert all(2 <= epochs <= 3 for epochs in row["epochs"]) and 0 <= row["plateaued"] <= 2
        assert row["subwords_per_word"] >= 1
    assert rows["random"]["pretrain_tokens"] == 0
    # packed sequences: every step trains global batch x seq_len real tokens; the general arm the same budget
    assert rows["scratch"]["pretrain_tokens"] == 40 * per_step and rows["scratch"]["pretrain_seconds"] > 0
    assert rows["general-scratch"]["pretrain_tokens"] == 40 * per_step
    # two vocabularies: the same test words cut differently
    assert rows["general-scratch"]["subwords_per_word"] != rows["scratch"]["subwords_per_word"]
    # the matrix: every encoder on both corpora, on the same words
    assert set(result["matrix"]) == {"random", "scratch", "general-scratch", "scratch-25pct", "scratch-50pct"}
    for encoder in result["matrix"].values():
        assert set(encoder) == {"biomedical", "general"} and all(v["loss_per_word"] > 0 for v in encoder.values())
    assert len({e["general"]["masked_words"] for e in result["matrix"].values()}) == 1
    # the curve: the scratch arm at 25%, 50% and 100% of its budget, the last point is the arm's own score
    assert [point["tokens"] for point in result["curve"]] == [10 * per_step, 20 * per_step, 40 * per_step]
    assert result["curve"][-1]["f1_mean"] == pytest.approx(rows["scratch"]["f1_mean"])
    assert Path(result["curve_plot"]).stat().st_size > 0
    assert result["heldout_loss"] > 0 and result["unigram_loss"] > 0


@pytest.mark.extended
def test_bench_fanout_json(data_root):
    """Three fine-tunes as pipeline stages (one seed x a 3-rate grid) against the HF loop: the JSON alone on
    stdout, its rates from its own wall times."""
    from tests.support.cli import run_bioray

    done = run_bioray("bench", "fanout", "--data", str(data_root / "NCBI-disease" / "biobert"), "--stages", "3",
                      "--max-train", "50", "--json", timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)  # stdout is the JSON alone
    assert {"stages", "startup_median_s", "stages_per_hour", "baseline_stages_per_hour", "speedup",
            "ideal_stages_per_hour"} <= set(result)
    assert result["stages"] == 3 and len(result["seeds"]) * len(result["lrs"]) == 3
    assert result["train_sentences"] == 50 and result["cores"] >= 1
    assert min(result["stages_per_hour"], result["baseline_stages_per_hour"], result["ideal_stages_per_hour"]) > 0
    assert result["stages_per_hour"] == pytest.approx(3 * 3600 / result["wall_s"])
    assert result["baseline_stages_per_hour"] == pytest.approx(3 * 3600 / result["baseline_wall_s"])
    assert result["speedup"] == pytest.approx(result["stages_per_hour"] / result["baseline_stages_per_hour"])
    assert result["ideal_stages_per_hour"] == pytest.approx(result["cores"] * 3600 / result["compute_s"])
    # every stage recorded its start-up (the runner submitting it to its first optimizer step)
    assert result["startup_stages"] == 3 and 0 < result["startup_median_s"] <= result["startup_max_s"]

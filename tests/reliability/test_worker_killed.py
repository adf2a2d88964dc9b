"""Fault: a Ray Train worker SIGKILLed mid-pretraining (DeepSpeed over gloo, real token shards). The run
restarts from its last checkpoint and reproduces the uninterrupted run's loss curve step for step."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psutil
import pytest
import ray

from bioray.config import IngestConfig, SourceConfig, TokenizeConfig, VocabConfig
from bioray.data.ingest import run_ingest
from bioray.data.tokenize import run_tokenize
from bioray.data.vocab import run_vocab
from tests.integration.test_pretrain_ray import (
    EVERY,
    LONG_FROM,
    STEPS,
    _config,
    _history,
    _pretrain,
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, data_root):
    ray.init(num_cpus=4, include_dashboard=False)  # 2 training workers + Ray Data's read tasks beside them
    work = tmp_path_factory.mktemp("pretrain")
    for stage in ("ingest", "vocab", "tokenize"):
        (work / stage).mkdir()
    run_ingest(IngestConfig(sources=[SourceConfig(name="abstracts", format="jsonl", path="corpus/medical-abstracts-tc",
                                                  max_docs=600)]), data_root, work / "ingest")
    run_vocab(VocabConfig(size=2000, sample_docs=600), work / "ingest" / "documents", work / "vocab", None)
    run_tokenize(TokenizeConfig(seq_len=64, long_seq_len=128), work / "ingest" / "documents",
                 work / "vocab" / "tokenizer", work / "tokenize")
    yield work
    ray.shutdown()


def _registered_checkpoints(storage: Path) -> list[dict]:
    """Checkpoints Ray Train has registered (every worker reported), from its snapshot file."""
    snapshot = storage / "checkpoint_manager_snapshot.json"
    return json.loads(snapshot.read_text())["checkpoint_results"] if snapshot.is_file() else []


def _train_workers() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any("RayTrainWorker" in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


@pytest.mark.slow
def test_killed_worker_resumes_from_checkpoint_on_the_same_loss_curve(shards, tmp_path):
    _pretrain(shards, tmp_path, "steady", _config())
    steady = _history(tmp_path, "steady")
    assert sorted(steady) == list(range(1, STEPS + 1))
    # two phases: 64-token sequences, then 128 (micro-batch 4, twice the accumulation, same global batch)
    assert [steady[s]["pretrain/seq_len"] for s in (1, LONG_FROM - 1, LONG_FROM, STEPS)] == [64, 64, 128, 128]
    assert steady[LONG_FROM]["pretrain/sequences_per_s"] > 0

    storage = tmp_path / "storage" / "killed"
    killed: list[int] = []

    def kill_after_first_checkpoint():
        deadline = time.time() + 600
        while time.time() < deadline and not killed:
            try:
                registered = _registered_checkpoints(storage)
            except ValueError:  # the snapshot is being rewritten
                registered = []
            if registered and not (tmp_path / "killed" / "history.json").exists():
                workers = _train_workers()
                if workers:
                    workers[-1].kill()  # SIGKILL: no cleanup, like a lost node
                    killed.append(registered[-1]["metrics"]["step"])
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    result, client, run_id = _pretrain(shards, tmp_path, "killed", _config())
    killer.join(timeout=1)
    assert killed, "no training worker was killed: the test proves nothing"

    resumed, restored_at = _history(tmp_path, "killed"), killed[0]
    assert sorted(resumed) == list(range(1, STEPS + 1))  # every step once: none lost, none repeated
    assert [row["attempt"] for row in resumed.values()] == [0] * restored_at + [1] * (STEPS - restored_at)
    assert restored_at < LONG_FROM  # the resumed attempt trains through the phase switch
    for step in range(1, STEPS + 1):  # same data order, masks and dropout after the restart
        assert resumed[step]["pretrain/loss"] == pytest.approx(steady[step]["pretrain/loss"], rel=1e-4, abs=1e-5), step

    # every checkpoint tracked in MLflow with its storage URI and size; only the last 2 kept
    records = [a.path for a in client.list_artifacts(run_id, "checkpoints")]
    assert f"checkpoints/step-{STEPS:08d}.json" in records and len(records) >= STEPS // EVERY
    last = client.download_artifacts(run_id, f"checkpoints/step-{STEPS:08d}.json", str(tmp_path))
    record = json.loads(Path(last).read_text())
    assert record["size_bytes"] > 100_000 and Path(record["uri"]).is_dir() and record["metrics"]["step"] == STEPS
    kept = _registered_checkpoints(storage)
    assert [c["metrics"]["step"] for c in kept] == [STEPS - EVERY, STEPS]  # the last 2
    assert all((storage / c["checkpoint_dir_name"]).is_dir() for c in kept)
    assert result["pretrain/steps"] == STEPS

    # the export loads with transformers and fills a [MASK]
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(tmp_path / "killed" / "model"))
    predictions = fill("Patients with chronic kidney [MASK] were enrolled.")
    assert len(predictions) == 5 and all(0 <= p["score"] <= 1 for p in predictions)

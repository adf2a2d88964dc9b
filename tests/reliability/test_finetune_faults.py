"""Faults of a fine-tuning stage on its worker group (two Ray actors, DDP over gloo), through the runner:
- a worker SIGKILLed mid-training: the stage runs again on a new group and commits one complete output,
  and the evaluation that waited on it runs on the new attempt's model;
- an error in the training code: the stage fails at once with that error, not retried, nothing written."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from mlflow.tracking import MlflowClient
from transformers import BertConfig, BertForMaskedLM

from bioray.data.vocab import train_wordpiece
from bioray.tasks.formats.conll import read_conll
from tests.support.workflows import run_in_process, write_workflow

STAGE = "finetune/tiny/ncbi-disease/seed-1"
EVALUATION = "evaluate/tiny/ncbi-disease/seed-1"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, data_root) -> Path:
    """A tiny BERT (positions for 64 sub-tokens) with a vocabulary of the training sentences."""
    train = read_conll(data_root / "NCBI-disease" / "biobert" / "train.tsv")
    directory = tmp_path_factory.mktemp("checkpoint")
    tokenizer = train_wordpiece([" ".join(s.words) for s in train[:2000]], 2000, lowercase=False, min_frequency=2)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=128, max_position_embeddings=64)).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def _workflow(tmp_path: Path, data_root: Path, checkpoint: Path, **finetune) -> Path:
    dataset = {"name": "ncbi-disease", "task": "ner", "train": "NCBI-disease/biobert/train.tsv",
               "test": "NCBI-disease/biobert/test.tsv", "max_train_examples": 400}
    tree = {"name": "faults", "workdir": str(tmp_path / "work"), "data_root": str(data_root),
            "encoders": [{"name": "tiny", "source": "checkpoint", "checkpoint": str(checkpoint)}],
            "finetune": {"datasets": [dataset], "seeds": [1], "epochs": 4, "batch_size": 16, "max_length": 64,
                         "num_workers": 2, "log_model": False, **finetune},
            "registry": {"enabled": False}}
    return write_workflow(tree, tmp_path / "faults.yaml")


def _training_workers() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if any("TrainingWorker" in part for part in p.info["cmdline"] or [])]


def _stage_outputs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "work" / "stages" / STAGE).iterdir())


def test_a_killed_worker_reruns_the_fine_tune_on_a_new_group(ray_session, tmp_path, data_root, checkpoint, caplog):
    workflow = _workflow(tmp_path, data_root, checkpoint)
    client = MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    killed: list[int] = []

    def kill_a_worker_once_it_trains():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            time.sleep(0.2)
            workers = _training_workers()
            runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
                    if r.data.tags.get("bioray.stage") == STAGE] if len(workers) == 2 else []
            if runs and client.get_metric_history(runs[0].info.run_id, "finetune/loss"):  # it has taken a step
                victim = max(workers, key=lambda p: p.pid)
                victim.send_signal(signal.SIGKILL)
                killed.append(victim.pid)

    killer = threading.Thread(target=kill_a_worker_once_it_trains, daemon=True)
    killer.start()
    with caplog.at_level(logging.WARNING, logger="bioray.pipeline.runner"):
        summary = run_in_process(workflow, [EVALUATION])
    killer.join(5)
    assert killed, "no worker was killed: the fine-tune ended before it logged a step"
    assert not summary.failed, summary.failed
    assert not summary.results[EVALUATION].cached and summary.results[EVALUATION].metrics["ner/test_f1"] >= 0
    assert f"stage {STAGE}: " in caplog.text and "running it again on new workers (attempt 2 of 3)" in caplog.text
    # one complete output, nothing half-written left beside it
    outputs = _stage_outputs(tmp_path)
    assert [p.name for p in outputs] == [summary.results[STAGE].key]
    assert (outputs[0] / "result.json").is_file() and (outputs[0] / "model" / "model.safetensors").is_file()
    assert not any(p.pid in killed for p in _training_workers())  # the run's groups are gone, the killed one too


def test_an_error_in_the_training_code_fails_at_once(ray_session, tmp_path, data_root, checkpoint, caplog):
    # windows of 128 sub-tokens through 64 position embeddings: an IndexError in every worker's first step
    workflow = _workflow(tmp_path, data_root, checkpoint, max_length=128)
    with caplog.at_level(logging.WARNING, logger="bioray.pipeline.runner"):
        summary = run_in_process(workflow, [STAGE])
    assert list(summary.failed) == [STAGE]
    assert "IndexError" in summary.failed[STAGE] and "running it again" not in caplog.text
    family = tmp_path / "work" / "stages" / STAGE
    assert not family.exists() or not any(family.iterdir())  # nothing committed, nothing half-written left

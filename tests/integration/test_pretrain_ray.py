"""Pretraining on real token shards with Ray Train + DeepSpeed over gloo (the killed-worker fault test,
which uses these helpers, is in tests/reliability/test_worker_killed.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient

from bioray.config import (
    IngestConfig,
    ModelConfig,
    PretrainConfig,
    SourceConfig,
    TokenizeConfig,
    VocabConfig,
)
from bioray.data.ingest import run_ingest
from bioray.data.tokenize import run_tokenize
from bioray.data.vocab import run_vocab
from bioray.train.pretrain import run_pretrain

STEPS, EVERY = 24, 8
LONG_FROM = 19  # the last quarter of the steps trains on 128-token sequences


@pytest.fixture(scope="module")
def shards(tmp_path_factory, data_root):
    ray.init(num_cpus=4, include_dashboard=False)  # 2 training workers + Ray Data's read tasks beside them
    work = tmp_path_factory.mktemp("pretrain")
    for stage in ("ingest", "vocab"):
        (work / stage).mkdir()
    run_ingest(IngestConfig(sources=[SourceConfig(name="abstracts", format="jsonl", path="corpus/medical-abstracts-tc",
                                                  max_docs=600)]), data_root, work / "ingest")
    run_vocab(VocabConfig(size=2000, sample_docs=600), work / "ingest" / "documents", work / "vocab", None)
    tokenizer = work / "vocab" / "tokenizer"
    run_tokenize(TokenizeConfig(seq_len=64, packing="document", nsp=True), work / "ingest" / "documents", tokenizer,
                 work / "tokenize-nsp")
    yield work
    ray.shutdown()


def _config(**overrides) -> PretrainConfig:
    settings = dict(model=ModelConfig(layers=2, hidden=64, heads=2, intermediate=128, max_position=128),
                    num_workers=2, steps=STEPS, global_batch_size=32, micro_batch_size=8, lr=1e-3, warmup_steps=4,
                    log_every=1, checkpoint_every=EVERY, keep_checkpoints=2, max_failures=2, shuffle_buffer=64,
                    long_phase_fraction=0.25, long_micro_batch_size=4)
    return PretrainConfig(**{**settings, **overrides})


def _pretrain(shards: Path, tmp: Path, name: str, config: PretrainConfig,
              tokenized: str = "tokenize") -> tuple[dict, MlflowClient, str]:
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("t") or client.get_experiment(client.create_experiment("t"))
    run_id = client.create_run(experiment.experiment_id).info.run_id
    output = tmp / name
    output.mkdir()
    result = run_pretrain(config, sequences_dir=shards / tokenized / "sequences",
                          long_sequences_dir=shards / tokenized / "sequences-128",
                          tokenizer_dir=shards / "vocab" / "tokenizer", output=output, storage=str(tmp / "storage"),
                          run_name=name, tracking_uri=uri, run_id=run_id, init_checkpoint=None)
    return result, client, run_id


def _history(tmp: Path, name: str) -> dict[int, dict]:
    return {row["step"]: row for row in json.loads((tmp / name / "history.json").read_text())}


@pytest.mark.slow
def test_next_sentence_head_in_bf16_on_cpu(shards, tmp_path):
    """BertForPreTraining-style MLM + NSP on document-packed pairs, bf16 on CPU, whole-word masking."""
    config = _config(steps=16, long_phase_fraction=0.0, long_micro_batch_size=None, nsp=True, precision="bf16",
                     whole_word_masking=True, lr=2e-3, checkpoint_every=100)
    result, _, _ = _pretrain(shards, tmp_path, "nsp", config, tokenized="tokenize-nsp")
    history = _history(tmp_path, "nsp")
    assert sorted(history) == list(range(1, 17))
    last = history[16]
    assert {"pretrain/nsp_loss", "pretrain/nsp_accuracy", "pretrain/mlm_loss"} <= set(last)
    assert 0.0 <= last["pretrain/nsp_accuracy"] <= 1.0
    assert last["pretrain/loss"] == pytest.approx(last["pretrain/mlm_loss"] + last["pretrain/nsp_loss"], rel=1e-6)
    # It learns, in bf16: one batch's loss is noisy, so compare the first and last four steps' means.
    early = sum(history[step]["pretrain/mlm_loss"] for step in range(1, 5)) / 4
    late = sum(history[step]["pretrain/mlm_loss"] for step in range(13, 17)) / 4
    assert late < early - 0.3, [round(history[step]["pretrain/mlm_loss"], 3) for step in sorted(history)]
    assert result["pretrain/final_nsp_accuracy"] == last["pretrain/nsp_accuracy"]

    from safetensors import safe_open
    from transformers import AutoModelForMaskedLM

    with safe_open(str(tmp_path / "nsp" / "model" / "model.safetensors"), "pt") as weights:
        names = list(weights.keys())
        assert weights.get_tensor(names[0]).dtype == torch.bfloat16  # trained in bf16
    assert any("seq_relationship" in n for n in names)  # the NSP head is exported too
    model = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "nsp" / "model"))  # and still loads as an MLM
    assert model.config.num_hidden_layers == 2

"""Pretraining on real token shards with Ray Train + DeepSpeed over gloo: MLM + NSP in bf16 (the
killed-worker fault test, which uses these helpers, is in tests/reliability/test_worker_killed.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from bioray.config import ModelConfig, PretrainConfig, TokenizeConfig
from bioray.tracking.context import RunContext
from bioray.train.pretrain import run_pretrain

STEPS, EVERY = 24, 8
LONG_FROM = 19  # the last quarter of the steps trains on 128-token sequences


def corpus_parts(template: Path) -> dict[str, Path]:
    """The session template's committed documents, tokenizer and token shards."""
    stages = template / "stages"
    return {"documents": next((stages / "ingest").glob("*/documents")),
            "tokenizer": next((stages / "vocab").glob("*/tokenizer")),
            "tokenize": next((stages / "tokenize").glob("*/sequences")).parent}


def _config(**overrides) -> PretrainConfig:
    settings = dict(model=ModelConfig(layers=2, hidden=64, heads=2, intermediate=128, max_position=128),
                    num_workers=2, steps=STEPS, global_batch_size=32, micro_batch_size=8, lr=1e-3, warmup_steps=4,
                    log_every=1, checkpoint_every=EVERY, keep_checkpoints=2, max_failures=2, shuffle_buffer=64,
                    long_phase_fraction=0.25, long_micro_batch_size=4)
    return PretrainConfig(**{**settings, **overrides})


def _pretrain(parts: dict[str, Path], tmp: Path, name: str, config: PretrainConfig,
              tokenized: Path | None = None) -> tuple[dict, MlflowClient, str]:
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("t") or client.get_experiment(client.create_experiment("t"))
    run_id = client.create_run(experiment.experiment_id).info.run_id
    output = tmp / name
    output.mkdir()
    tokenized = tokenized or parts["tokenize"]
    context = RunContext(uri, experiment.experiment_id, run_id, run_id)
    result = run_pretrain(config, sequences_dir=tokenized / "sequences", long_sequences_dir=tokenized / "sequences-128",
                          tokenizer_dir=parts["tokenizer"], output=output, storage=str(tmp / "storage"),
                          run_name=name, context=context, init_checkpoint=None)
    return result, client, run_id


def _history(tmp: Path, name: str) -> dict[int, dict]:
    return {row["step"]: row for row in json.loads((tmp / name / "history.json").read_text())}


def _mlm_loss(model, sequences: Path, tokenizer) -> float:
    """MLM loss of a model on the same masked sequences every time (seeded masks)."""
    import pyarrow.dataset as pads

    from bioray.data.masking import mask_batch

    table = pads.dataset(str(sequences), format="parquet").to_table().slice(0, 256)
    batch = {name: table.column(name).to_numpy(zero_copy_only=False) for name in
             ("input_ids", "token_type_ids", "word_start", "length")}
    masked = mask_batch(batch, 0.15, tokenizer.mask_token_id, len(tokenizer), list(tokenizer.all_special_ids),
                        torch.Generator().manual_seed(0), False)
    model.eval()
    with torch.no_grad():
        return float(model(input_ids=masked["input_ids"], token_type_ids=masked["token_type_ids"],
                           attention_mask=masked["attention_mask"], labels=masked["labels"]).loss)


@pytest.mark.extended
def test_next_sentence_head_in_bf16_on_cpu(corpus_template, ray_session, tmp_path):
    """BertForPreTraining-style MLM + NSP on document-packed pairs, bf16 on CPU, whole-word masking."""
    from bioray.data.tokenize import run_tokenize

    parts = corpus_parts(corpus_template)
    nsp = tmp_path / "tokenize-nsp"
    nsp.mkdir()
    run_tokenize(TokenizeConfig(seq_len=64, packing="document", nsp=True), parts["documents"], parts["tokenizer"], nsp)
    config = _config(steps=10, global_batch_size=16, long_phase_fraction=0.0, long_micro_batch_size=None, nsp=True,
                     precision="bf16", whole_word_masking=True, lr=2e-3, checkpoint_every=100)
    result, _, _ = _pretrain(parts, tmp_path, "nsp", config, tokenized=nsp)
    history = _history(tmp_path, "nsp")
    assert sorted(history) == list(range(1, 11))
    last = history[10]
    assert {"pretrain/nsp_loss", "pretrain/nsp_accuracy", "pretrain/mlm_loss"} <= set(last)
    assert 0.0 <= last["pretrain/nsp_accuracy"] <= 1.0
    assert last["pretrain/loss"] == pytest.approx(last["pretrain/mlm_loss"] + last["pretrain/nsp_loss"], rel=1e-6)
    assert result["pretrain/final_nsp_accuracy"] == last["pretrain/nsp_accuracy"]

    from safetensors import safe_open
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from bioray.model.encoder import build_mlm_model

    with safe_open(str(tmp_path / "nsp" / "model" / "model.safetensors"), "pt") as weights:
        names = list(weights.keys())
        assert weights.get_tensor(names[0]).dtype == torch.bfloat16  # trained in bf16
    assert any("seq_relationship" in n for n in names)  # the NSP head is exported too
    trained = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "nsp" / "model"), torch_dtype=torch.float32)
    assert trained.config.num_hidden_layers == 2  # and still loads as an MLM
    # it learned, in bf16: on the same masked sequences, the trained model's MLM loss is below that of
    # a model initialised as rank 0's was (a loop that never updated the weights would not be)
    tokenizer = AutoTokenizer.from_pretrained(str(parts["tokenizer"]))
    torch.manual_seed(config.seed * 1000)
    build_mlm_model(len(tokenizer), tokenizer.pad_token_id, **config.model.model_dump(), nsp=True).save_pretrained(
        str(tmp_path / "initial"))
    initial = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "initial"))
    sequences = nsp / "sequences"
    assert _mlm_loss(trained, sequences, tokenizer) < _mlm_loss(initial, sequences, tokenizer)

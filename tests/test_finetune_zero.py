"""finetune.zero_stage: fine-tuning through real DeepSpeed ZeRO engines on two gloo ranks trains exactly
as plain DDP does (the same per-epoch losses and the same weights), with bioray's own training loop."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import torch

from bioray.config import TrainingConfig
from tests.support.gloo import run_ranks

VOCAB, LABELS = 60, 3


@dataclass
class Feature:
    input_ids: list[int]
    labels: list[int]


class ToyTask:
    """Just what train_epochs asks of a task: collate a batch of features into padded tensors."""

    def collate(self, batch: list[Feature], pad_id: int) -> dict:
        width = max(len(f.input_ids) for f in batch)
        ids = torch.full((len(batch), width), pad_id)
        labels = torch.full((len(batch), width), -100)
        for row, feature in enumerate(batch):
            ids[row, :len(feature.input_ids)] = torch.tensor(feature.input_ids)
            labels[row, :len(feature.labels)] = torch.tensor(feature.labels)
        return {"input_ids": ids, "attention_mask": (ids != pad_id).long(), "labels": labels}


def _features() -> list[Feature]:
    rng = random.Random(7)
    features = []
    for _ in range(48):
        ids = [rng.randrange(1, VOCAB) for _ in range(rng.randrange(4, 20))]
        features.append(Feature(ids, [i % LABELS for i in ids]))  # learnable: the label follows the token
    return features


def _train(rank: int, zero_stage: int | None) -> dict:
    from transformers import BertConfig, BertForTokenClassification

    from bioray.train.finetune import train_epochs

    config = TrainingConfig(epochs=2, lr=1e-3, batch_size=4, warmup_ratio=0.1, zero_stage=zero_stage)
    torch.manual_seed(0)
    model = BertForTokenClassification(BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, num_labels=LABELS, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    core = model
    if zero_stage is None:
        model = torch.nn.parallel.DistributedDataParallel(model)
    features = _features()[rank::2]  # each rank its slice, as the Ray Train loop does
    losses = []

    def after_epoch(epoch: int, step: int, train_loss: float) -> dict:
        losses.append(train_loss)
        return {"finetune/train_loss": train_loss}

    train_epochs(model, ToyTask(), features, config, random.Random(1), "cpu", 0, after_epoch)
    return {"losses": losses, "weights": core.classifier.weight.detach().flatten().tolist()}


def _train_each_way(rank: int) -> dict:
    return {str(stage): _train(rank, stage) for stage in (None, 1, 2)}


@pytest.mark.timeout(600)
def test_zero_finetuning_trains_as_ddp_does():
    results = run_ranks(_train_each_way)
    ddp = results["None"]
    assert len(ddp["losses"]) == 2 and ddp["losses"][1] < ddp["losses"][0]  # it learns
    for stage in ("1", "2"):
        assert results[stage]["losses"] == pytest.approx(ddp["losses"], rel=1e-4), stage
        assert results[stage]["weights"] == pytest.approx(ddp["weights"], rel=1e-3, abs=1e-5), stage

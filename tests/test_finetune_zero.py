"""Fine-tuning's worker count changes the speed, not the model: bioray's training loop on two gloo ranks,
through DDP and through real DeepSpeed ZeRO-1 and ZeRO-2 engines, takes the same steps as one process
(the same per-step losses and the same weights), batches that do not split evenly included."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import torch

from bioray.config import TrainingConfig
from bioray.tasks.base import Task
from tests.support.gloo import run_ranks

VOCAB, LABELS = 60, 3


@dataclass
class Feature:
    input_ids: list[int]
    labels: list[int]


class ToyTask:
    """Just what train_epochs asks of a task: collate a batch of features into padded tensors, and count
    the loss's terms (labelled tokens), as a Task does."""

    loss_terms = Task.loss_terms

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
    for _ in range(46):  # in batches of 5: rows split 3 + 2 over two ranks, and the last batch is 1 row
        ids = [rng.randrange(1, VOCAB) for _ in range(rng.randrange(4, 20))]
        features.append(Feature(ids, [i % LABELS for i in ids]))  # learnable: the label follows the token
    return features


def _train(rank: int, world: int, zero_stage: int | None) -> dict:
    from transformers import BertConfig, BertForTokenClassification

    from bioray.train.finetune import train_epochs

    config = TrainingConfig(epochs=2, lr=1e-3, batch_size=5, warmup_ratio=0.1, zero_stage=zero_stage)
    torch.manual_seed(0)
    model = BertForTokenClassification(BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, num_labels=LABELS, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    core = model
    if zero_stage is None and world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    losses = []
    # every rank gets all the features and the same order: each trains on its rows of every global batch
    train_epochs(model, ToyTask(), _features(), config, random.Random(1), "cpu", 0, rank=rank, world=world,
                 on_step=lambda step, loss: losses.append(loss))
    return {"losses": losses, "weights": core.classifier.weight.detach().flatten().tolist()}


def _train_alone(rank: int) -> dict:
    return _train(rank, 1, None)


def _train_each_way(rank: int) -> dict:
    return {str(stage): _train(rank, 2, stage) for stage in (None, 1, 2)}


@pytest.mark.timeout(600)
def test_two_ranks_train_as_one_process_does_with_ddp_and_zero():
    alone = run_ranks(_train_alone, world=1)
    assert len(alone["losses"]) == 2 * 10  # 46 features in batches of 5, two epochs: none dropped
    assert sum(alone["losses"][10:]) < sum(alone["losses"][:10])  # it learns
    results = run_ranks(_train_each_way)
    for stage in ("None", "1", "2"):
        assert results[stage]["losses"] == pytest.approx(alone["losses"], rel=1e-4, abs=1e-6), stage
        assert results[stage]["weights"] == pytest.approx(alone["weights"], rel=1e-3, abs=1e-5), stage

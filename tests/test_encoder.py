"""The pretraining loss (masked-only MLM decoder, optional NSP head) and the masking collate step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import BertForMaskedLM, BertForPreTraining

from bioray.config import ModelConfig, PretrainConfig
from bioray.constants import IGNORE_INDEX
from bioray.model.encoder import STATS, build_mlm_model, pretraining_loss
from bioray.train.pretrain import MaskingCollate

SHAPE = ModelConfig(layers=1, hidden=32, heads=2, intermediate=64, max_position=32, dropout=0.0)


def _batch(nsp_labels=None):
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 100, (4, 16), generator=generator)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, 3] = input_ids[:, 3]
    labels[:2, 7] = input_ids[:2, 7]
    batch = {"input_ids": input_ids, "token_type_ids": torch.zeros_like(input_ids),
             "attention_mask": torch.ones_like(input_ids), "labels": labels}
    if nsp_labels is not None:
        batch["next_sentence_label"] = torch.tensor(nsp_labels)
    return batch


def test_mlm_loss_equals_the_full_decoder_loss_on_masked_positions():
    torch.manual_seed(0)
    model = build_mlm_model(100, 0, **SHAPE.model_dump()).eval()
    batch = _batch()
    loss, stats = pretraining_loss(model, batch)
    reference = model(**{k: v for k, v in batch.items()}).loss  # HF: decoder over every position
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    counts = dict(zip(STATS, stats.tolist()))
    assert counts["masked"] == 6 and counts["pairs"] == 0 and counts["nsp_loss"] == 0


def test_nsp_head_adds_its_loss_and_ignores_sequences_without_a_pair():
    torch.manual_seed(0)
    model = build_mlm_model(100, 0, **SHAPE.model_dump(), nsp=True).eval()
    assert isinstance(model, BertForPreTraining)
    batch = _batch(nsp_labels=[0, 1, IGNORE_INDEX, 1])
    loss, stats = pretraining_loss(model, batch)
    counts = dict(zip(STATS, stats.tolist()))
    assert counts["pairs"] == 3
    encoded = model.bert(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                         attention_mask=batch["attention_mask"])
    nsp_logits = model.cls.seq_relationship(encoded.pooler_output)[[0, 1, 3]]
    expected_nsp = F.cross_entropy(nsp_logits, torch.tensor([0, 1, 1]))
    assert counts["nsp_loss"] == pytest.approx(expected_nsp.item(), rel=1e-5)
    assert loss.item() == pytest.approx(counts["mlm_loss"] + counts["nsp_loss"], rel=1e-5)
    loss.backward()
    assert model.cls.seq_relationship.weight.grad.abs().sum() > 0


def test_model_without_nsp_head_ignores_nsp_labels():
    model = build_mlm_model(100, 0, **SHAPE.model_dump())
    assert isinstance(model, BertForMaskedLM)
    _, stats = pretraining_loss(model, _batch(nsp_labels=[0, 1, 0, 1]))
    assert dict(zip(STATS, stats.tolist()))["pairs"] == 0


def _sequences(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 100, (8, 16)).astype(np.int32)
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "word_start": np.ones_like(ids),
            "length": np.full(8, 16), "next_sentence_label": np.array([0, 1] * 4, dtype=np.int8)}


def test_masks_depend_on_the_batch_content_and_epoch_not_on_call_order():
    config = PretrainConfig(num_workers=1, global_batch_size=8, micro_batch_size=8, nsp=True)
    collate = MaskingCollate(config, mask_id=4, vocab_size=100, special_ids=[0, 1, 2, 3, 4], rank=0, epoch=0)
    a, b = _sequences(1), _sequences(2)
    first_a, first_b = collate(a)["labels"], collate(b)["labels"]
    assert torch.equal(collate(b)["labels"], first_b) and torch.equal(collate(a)["labels"], first_a)  # any order
    assert not torch.equal(first_a, first_b)
    next_epoch = MaskingCollate(config, mask_id=4, vocab_size=100, special_ids=[0, 1, 2, 3, 4], rank=0, epoch=1)
    assert not torch.equal(next_epoch(a)["labels"], first_a)  # a new mask every time a sequence is seen
    assert collate(a)["next_sentence_label"].tolist() == [0, 1] * 4


def test_every_parameter_gets_a_gradient_even_without_masks_or_pairs():
    """ZeRO reduces gradients in buckets: a rank whose micro-batch has nothing to predict must still
    produce a gradient for every parameter, or the ranks' buckets differ and gloo aborts."""
    model = build_mlm_model(100, 0, **SHAPE.model_dump(), nsp=True)
    batch = _batch(nsp_labels=[IGNORE_INDEX] * 4)
    batch["labels"].fill_(IGNORE_INDEX)
    loss, stats = pretraining_loss(model, batch)
    loss.backward()
    assert loss.item() == 0 and dict(zip(STATS, stats.tolist()))["masked"] == 0
    assert all(p.grad is not None for p in model.parameters())

"""Each fast-path switch computes what the plain path computes: the same loss and the same gradients
(CPU forms; tests/gpu/ covers the CUDA-only kernels)."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from transformers import (
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)

from bioray.config import ModelConfig, PretrainConfig, PretrainFastPathConfig
from bioray.constants import IGNORE_INDEX
from bioray.model.encoder import apply_fast_path, build_mlm_model, pretraining_loss
from bioray.model.unpad import RealTokens, encode_unpadded
from bioray.train.flops import mlm_parameters, peak_flops
from bioray.train.optim import build_optimizer, decay_groups

SHAPE = ModelConfig(layers=2, hidden=64, heads=4, intermediate=128, max_position=64, dropout=0.0)
PLAIN = PretrainFastPathConfig(unpad=False, masked_only_decoder=False, fused_optimizer=False)


def _padded_batch(lengths=(16, 9, 3, 12), vocab=100, nsp=False):
    """Right-padded rows of the given lengths, about 30% of real tokens masked."""
    generator = torch.Generator().manual_seed(1)
    rows, length = len(lengths), max(lengths)
    attention = (torch.arange(length)[None] < torch.tensor(lengths)[:, None]).long()
    input_ids = torch.randint(5, vocab, (rows, length), generator=generator) * attention
    token_types = (torch.arange(length)[None] >= torch.tensor(lengths)[:, None] // 2).long() * attention
    chosen = (torch.rand(rows, length, generator=generator) < 0.3) & attention.bool()
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    batch = {"input_ids": input_ids, "attention_mask": attention, "token_type_ids": token_types, "labels": labels}
    if nsp:
        batch["next_sentence_label"] = torch.tensor([0, 1, IGNORE_INDEX, 1][:rows])
    return batch


def _loss_and_grads(model, batch, fast):
    model.zero_grad(set_to_none=True)
    loss, stats = pretraining_loss(model, batch, **fast.loss_switches())
    loss.backward()
    return loss.item(), stats, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_grads(expected: dict, actual: dict, atol: float):
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=atol, rtol=1e-4, msg=name)


def test_unpadded_encoder_gives_the_padded_hf_encoder_outputs_on_real_tokens():
    torch.manual_seed(0)
    model = build_mlm_model(100, 0, **SHAPE.model_dump()).eval()
    batch = _padded_batch()
    hidden, real = encode_unpadded(model.bert, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert hidden.shape == (16 + 9 + 3 + 12, SHAPE.hidden)  # only real tokens are computed
    assert real.cu_seqlens.tolist() == [0, 16, 25, 28, 40] and real.max_len == 16
    reference = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch["token_type_ids"]).last_hidden_state
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(real.scatter(hidden)[mask], reference[mask], atol=1e-5, rtol=1e-5)
    assert real.scatter(hidden)[~mask].abs().sum() == 0


@pytest.mark.parametrize("switch", [{"unpad": True}, {"masked_only_decoder": True},
                                    {"unpad": True, "masked_only_decoder": True}])
@pytest.mark.parametrize("nsp", [False, True])
def test_pretraining_loss_and_gradients_match_the_plain_path(switch, nsp):
    torch.manual_seed(0)
    model = build_mlm_model(100, 0, **SHAPE.model_dump(), nsp=nsp)
    batch = _padded_batch(nsp=nsp)
    plain_loss, plain_stats, plain_grads = _loss_and_grads(model, batch, PLAIN)
    loss, stats, grads = _loss_and_grads(model, batch, PLAIN.model_copy(update=switch))
    assert loss == pytest.approx(plain_loss, rel=1e-5)
    torch.testing.assert_close(stats, plain_stats, atol=1e-5, rtol=1e-5)  # correct/masked/pairs counts too
    _assert_same_grads(plain_grads, grads, atol=1e-6)


def test_a_batch_without_padding_takes_the_maskless_view_path():
    batch = _padded_batch(lengths=(12, 12, 12))
    real = RealTokens.of(batch["attention_mask"])
    assert real.full and real.gather(batch["input_ids"]).data_ptr() == batch["input_ids"].data_ptr()  # no copy
    torch.manual_seed(0)
    model = build_mlm_model(100, 0, **SHAPE.model_dump())
    plain_loss, _, plain_grads = _loss_and_grads(model, batch, PLAIN)
    loss, _, grads = _loss_and_grads(model, batch, PretrainFastPathConfig())
    assert loss == pytest.approx(plain_loss, rel=1e-5)
    _assert_same_grads(plain_grads, grads, atol=1e-6)


@pytest.mark.parametrize("head", [BertForTokenClassification, BertForSequenceClassification,
                                  BertForQuestionAnswering])
def test_unpadded_forward_under_every_hf_task_head(head):
    """Fine-tuning: the HF head's outputs on real tokens, its loss and the gradients, through the
    unpadded encoder, equal the plain ones. HF's QA head puts padding positions into its softmax
    (their logits come from whatever the encoder left there), so its loss is compared on a batch
    without padding."""
    config = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        num_labels=2 if head is BertForQuestionAnswering else 3, attn_implementation="sdpa")
    torch.manual_seed(0)
    plain = head(config)
    fast = apply_fast_path(copy.deepcopy(plain))
    batch = _padded_batch(lengths=(16, 16, 16, 16) if head is BertForQuestionAnswering else (16, 9, 3, 12))
    real = batch["attention_mask"].bool()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    if head is BertForTokenClassification:
        inputs["labels"] = torch.where(real, batch["input_ids"] % 3, torch.full_like(batch["input_ids"], IGNORE_INDEX))
    elif head is BertForSequenceClassification:
        inputs["labels"] = torch.tensor([0, 2, 1, 1])
    else:
        inputs["start_positions"], inputs["end_positions"] = torch.tensor([1, 2, 0, 5]), torch.tensor([3, 4, 2, 9])
    outputs, grads = [], []
    for model in (plain, fast):
        output = model(**inputs)
        output.loss.backward()
        outputs.append(output)
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert outputs[1].loss.item() == pytest.approx(outputs[0].loss.item(), rel=1e-5)
    for key in ("logits", "start_logits", "end_logits"):
        if key in outputs[0]:
            expected, actual = outputs[0][key], outputs[1][key]
            if expected.dim() > 1 and expected.shape[1] == real.shape[1]:
                expected, actual = expected[real], actual[real]  # per-token outputs: the real tokens
            torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    _assert_same_grads(grads[0], grads[1], atol=1e-6)
    assert fast.state_dict().keys() == plain.state_dict().keys()  # checkpoints stay plain HF checkpoints


def test_unpadded_forward_survives_a_deep_copy():
    model = apply_fast_path(BertForTokenClassification(BertConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=128,
        num_labels=3)))
    twin = copy.deepcopy(model)
    assert twin.bert.forward.__self__ is twin.bert  # the copy's forward runs the copy's weights


def test_flash_varlen_falls_back_to_sdpa_without_flash_attn_or_gpu(caplog):
    torch.manual_seed(0)
    model = build_mlm_model(100, 0, **SHAPE.model_dump())
    batch = _padded_batch()
    expected, _, expected_grads = _loss_and_grads(model, batch, PretrainFastPathConfig())
    with caplog.at_level(logging.WARNING):
        loss, _, grads = _loss_and_grads(model, batch, PretrainFastPathConfig(attention="flash_varlen"))
    assert loss == expected
    _assert_same_grads(expected_grads, grads, atol=0)
    assert not torch.cuda.is_available() and "using SDPA instead" in caplog.text


@pytest.mark.extended  # inductor compiles for ~30 s on CPU
def test_compiled_dense_blocks_match_eager():
    """torch.compile (inductor, CPU here) of each layer's dense blocks: same loss and gradients, same
    parameter names."""
    torch.manual_seed(0)
    eager = build_mlm_model(100, 0, **SHAPE.model_dump())
    compiled = copy.deepcopy(eager)
    apply_fast_path(compiled, compile=True)
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    for lengths in ((16, 9, 3, 12), (7, 16, 16, 2)):  # a second shape: no recompilation error
        batch = _padded_batch(lengths)
        expected, _, expected_grads = _loss_and_grads(eager, batch, PretrainFastPathConfig())
        loss, _, grads = _loss_and_grads(compiled, batch, PretrainFastPathConfig(compile=True))
        assert loss == pytest.approx(expected, rel=1e-4)
        _assert_same_grads(expected_grads, grads, atol=1e-5)


@pytest.mark.parametrize("name", ["adamw", "lamb"])
def test_fused_optimizer_switch_matches_the_unfused_optimizer(name):
    """adamw: torch's fused kernel (CPU form) against its per-tensor loop; lamb has no CPU kernel, so
    both switches give bioray's LAMB here (DeepSpeed FusedLamb is checked on GPU)."""
    torch.manual_seed(0)
    models = [build_mlm_model(100, 0, **SHAPE.model_dump()) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    initial = copy.deepcopy(models[0].state_dict())
    optimizers = [build_optimizer(name, decay_groups(m, 0.01), 1e-3, use_gpu=False, fused=fused)
                  for m, fused in zip(models, (False, True))]
    if name == "adamw":
        assert optimizers[1].defaults["fused"] and not optimizers[0].defaults["fused"]
    batch = _padded_batch()
    for _ in range(5):
        for model, optimizer in zip(models, optimizers):
            loss, _ = pretraining_loss(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    for (name_a, a), (_, b) in zip(models[0].named_parameters(), models[1].named_parameters()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=name_a)
    moved = (models[0].bert.encoder.layer[0].output.dense.weight - initial["bert.encoder.layer.0.output.dense.weight"])
    assert moved.abs().mean() > 5e-5  # the updates are far larger than the tolerance (1e-6)


def test_bf16_autocast_loss_is_close_to_fp32():
    """CPU form of the bf16 path: autocast matmuls, fp32 weights; the loss within bf16's precision."""
    torch.manual_seed(0)
    model = build_mlm_model(100, 0, **SHAPE.model_dump())
    batch = _padded_batch()
    fp32, _, fp32_grads = _loss_and_grads(model, batch, PretrainFastPathConfig())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16, _, bf16_grads = _loss_and_grads(model, batch, PretrainFastPathConfig())
    assert bf16 == pytest.approx(fp32, rel=2e-2)
    cosine = torch.nn.functional.cosine_similarity(torch.cat([g.flatten() for g in fp32_grads.values()]),
                                                   torch.cat([g.flatten() for g in bf16_grads.values()]), dim=0)
    assert cosine > 0.99


def test_reduce_once_per_step_runs_zero2_as_zero1_only_when_accumulating():
    def stage(**keys):
        return PretrainConfig(num_workers=2, zero_stage=keys.pop("zero_stage", 2), **keys).effective_zero_stage

    assert stage(global_batch_size=64, micro_batch_size=8) == 1  # 4 micro-batches per step
    assert stage(global_batch_size=16, micro_batch_size=8) == 2  # no accumulation: nothing to save
    assert stage(global_batch_size=16, micro_batch_size=8, long_phase_fraction=0.1, long_micro_batch_size=4) == 1
    assert stage(global_batch_size=64, micro_batch_size=8, fast={"reduce_once_per_step": False}) == 2
    assert stage(global_batch_size=64, micro_batch_size=8, zero_stage=3) == 3


def test_mfu_counts_bert_base_at_055_gflop_per_token_and_knows_the_cards():
    from bioray.train.flops import flops_per_token

    model = build_mlm_model(30522, 0)
    per_token = flops_per_token(mlm_parameters(model, 0.15), 12, 768, 128)
    assert 0.54e9 < per_token < 0.56e9
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA H200") == 989e12 and peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("Intel Xeon") is None

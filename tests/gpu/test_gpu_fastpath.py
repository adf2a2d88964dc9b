"""The CUDA-only forms of the fast path against the plain path, and the GPU benchmark end to end."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from bioray.config import ModelConfig, PretrainFastPathConfig
from bioray.data.masking import IGNORE_INDEX
from bioray.model.encoder import apply_fast_path, build_mlm_model, pretraining_loss
from bioray.model.unpad import encode_unpadded
from bioray.train.optim import Lamb, build_optimizer, decay_groups

SHAPE = ModelConfig(layers=2, hidden=256, heads=4, intermediate=1024, max_position=512, dropout=0.0)
PLAIN = PretrainFastPathConfig(unpad=False, masked_only_decoder=False, fused_optimizer=False)


def _batch(lengths, vocab=1000, device="cuda"):
    generator = torch.Generator().manual_seed(0)
    rows, length = len(lengths), max(lengths)
    attention = (torch.arange(length)[None] < torch.tensor(lengths)[:, None]).long()
    input_ids = torch.randint(5, vocab, (rows, length), generator=generator) * attention
    chosen = (torch.rand(rows, length, generator=generator) < 0.15) & attention.bool()
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    batch = {"input_ids": input_ids, "attention_mask": attention, "token_type_ids": torch.zeros_like(input_ids),
             "labels": labels}
    return {k: v.to(device) for k, v in batch.items()}


def _loss_and_grads(model, batch, fast, bf16=True):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        loss, _ = pretraining_loss(model, batch, **fast.loss_switches())
    loss.backward()
    return loss.item(), torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])


def _close(loss_a, grads_a, loss_b, grads_b, rel=2e-2):
    assert loss_a == pytest.approx(loss_b, rel=rel)
    assert torch.nn.functional.cosine_similarity(grads_a, grads_b, dim=0) > 0.99


def test_fast_path_in_bf16_matches_the_plain_fp32_path():
    torch.manual_seed(0)
    model = build_mlm_model(1000, 0, **SHAPE.model_dump()).cuda()
    batch = _batch([128, 77, 5, 100, 128, 64])
    _close(*_loss_and_grads(model, batch, PretrainFastPathConfig()), *_loss_and_grads(model, batch, PLAIN, bf16=False))


def test_full_batches_run_on_sdpa_flash_kernel():
    """Packed pretraining batches have no padding: attention goes maskless, so SDPA's flash kernel
    alone can run it (flash-only SDPA raises on a masked call)."""
    torch.manual_seed(0)
    model = build_mlm_model(1000, 0, **SHAPE.model_dump()).cuda()
    batch = _batch([128] * 8)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        fast = _loss_and_grads(model, batch, PretrainFastPathConfig())
    _close(*fast, *_loss_and_grads(model, batch, PLAIN, bf16=False))


def test_flash_attn_varlen_matches_sdpa():
    pytest.importorskip("flash_attn")
    torch.manual_seed(0)
    model = build_mlm_model(1000, 0, **SHAPE.model_dump()).cuda()
    batch = _batch([128, 77, 5, 100, 128, 64])
    with torch.autocast("cuda", dtype=torch.bfloat16):
        args = (model.bert, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        sdpa, _ = encode_unpadded(*args, attention="sdpa")
        flash, _ = encode_unpadded(*args, attention="flash_varlen")
    torch.testing.assert_close(flash.float(), sdpa.float(), atol=3e-2, rtol=3e-2)
    _close(*_loss_and_grads(model, batch, PretrainFastPathConfig(attention="flash_varlen")),
           *_loss_and_grads(model, batch, PretrainFastPathConfig()))


def test_compiled_dense_blocks_match_eager_on_gpu():
    torch.manual_seed(0)
    eager = build_mlm_model(1000, 0, **SHAPE.model_dump()).cuda()
    compiled = apply_fast_path(copy.deepcopy(eager), compile=True)
    for lengths in ([128] * 8, [128, 77, 5, 100]):
        batch = _batch(lengths)
        _close(*_loss_and_grads(compiled, batch, PretrainFastPathConfig(compile=True)),
               *_loss_and_grads(eager, batch, PretrainFastPathConfig()), rel=1e-2)


def test_deepspeed_fused_lamb_matches_biorays_lamb():
    """The updates (not the weights, which barely move in 5 steps) point the same way and are as large."""
    torch.manual_seed(0)
    models = [build_mlm_model(1000, 0, **SHAPE.model_dump()).cuda() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    initial = torch.cat([p.detach().flatten() for p in models[0].parameters()])
    fused = build_optimizer("lamb", decay_groups(models[0], 0.01), 1e-3, use_gpu=True, fused=True)
    assert type(fused).__name__ == "FusedLamb"
    reference = Lamb(decay_groups(models[1], 0.01), lr=1e-3, betas=(0.9, 0.999), eps=1e-6)
    batch = _batch([128] * 4)
    for _ in range(5):
        for model, optimizer in zip(models, (fused, reference)):
            loss, _ = pretraining_loss(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    deltas = [torch.cat([p.detach().flatten() for p in m.parameters()]) - initial for m in models]
    assert torch.nn.functional.cosine_similarity(deltas[0], deltas[1], dim=0) > 0.99
    assert deltas[0].norm() == pytest.approx(deltas[1].norm().item(), rel=0.1)


def test_bench_pretrain_on_cuda_reports_mfu(data_root):
    from bioray.bench.pretrain import bench_pretrain

    result = bench_pretrain(data_root / "pubmed-raw" / "abstracts_one_per_line", budget_tokens=300_000,
                            device="cuda", seq_lens=(128,))
    setting = result["settings"][0]
    assert result["model_size"] == "base" and result["model_vocab_size"] >= 30522  # BERT-base, the cuda default
    for side in ("bioray", "baseline", "packed_baseline"):
        assert setting[side]["tokens_per_s"] > 0 and setting[side]["peak_memory_mb"] > 0
        if result["peak_tflops"]:
            assert 0 < setting[side]["mfu"] < 1
    assert setting["bioray"]["fill_ratio"] > 0.99 and setting["packed_baseline"]["fill_ratio"] == 1.0
    # beside the vendor peak, the GPU's measured bf16 GEMM peak at the model's shapes; no CPU profile
    assert setting["measured_peak"]["dtype"] == "bfloat16" and setting["measured_peak_flops"] > 0
    assert setting["peak_fraction"] == setting["bioray"]["peak_fraction"] > 0 and setting["breakdown"] is None

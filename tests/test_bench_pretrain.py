"""`bioray bench pretrain`'s arms at their cheapest: the packed HF baseline's grouping (run_mlm.py
without --line_by_line) has no padding and the base size is BERT-base. The run that reports every arm
is the CLI's, tests/integration/test_bench.py (extended tier)."""


import numpy as np
import pytest
import torch

from bioray.bench.pretrain import BASE, SIZES, hf_batches, model_vocab_size, pack_blocks
from bioray.data.vocab import train_wordpiece

CLS, SEP, PAD = 2, 3, 0


def test_pack_blocks_cut_the_text_stream_into_full_blocks():
    rng = np.random.default_rng(0)
    texts = [rng.integers(5, 1000, size=n).tolist() for n in rng.integers(1, 40, size=60)]
    blocks = pack_blocks(texts, 32, CLS, SEP)
    stream = [t for ids in texts for t in (CLS, *ids, SEP)]  # each text with its special tokens, concatenated
    assert blocks.shape == (len(stream) // 32, 32)  # every block exactly seq_len long
    assert not (blocks == PAD).any()  # no padding anywhere
    assert blocks.ravel().tolist() == stream[: blocks.size]  # the stream in order, less the remainder
    assert 0 <= len(stream) - blocks.size < 32  # only a remainder shorter than a block is dropped
    assert blocks[0, 0] == CLS  # the first text opens with its [CLS]
    assert pack_blocks(texts[:1], 512, CLS, SEP).shape == (0, 512)  # too little text: no block at all


def test_packed_baseline_batches_are_the_blocks_without_padding():
    texts = [f"Protein {i} binds receptor {i % 7} in cell line HeLa and the kinase domain." for i in range(200)]
    tokenizer = train_wordpiece(texts, 300, lowercase=False, min_frequency=1)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    blocks = pack_blocks(encoded, 24, tokenizer.cls_token_id, tokenizer.sep_token_id)
    batches = hf_batches(tokenizer, [{"input_ids": b} for b in blocks.tolist()], 4)
    assert len(batches) == len(blocks) // 4
    for i, batch in enumerate(batches):
        assert batch["input_ids"].shape == (4, 24) and bool(batch["attention_mask"].all())  # no pad position
        original = torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])
        assert original.tolist() == blocks[4 * i: 4 * i + 4].tolist()  # the collator only masked
        assert not (original == tokenizer.pad_token_id).any()
    masked = torch.cat([b["labels"] != -100 for b in batches]).float().mean()
    assert 0.05 < masked < 0.25  # mlm_probability 0.15


def test_base_size_is_bert_base_with_30522_rows():
    from bioray.model.encoder import build_mlm_model
    from bioray.train.flops import flops_per_token, mlm_parameters

    shape, rows = SIZES["base"]
    assert shape == BASE and (shape.layers, shape.hidden, shape.heads, shape.intermediate) == (12, 768, 12, 3072)
    assert model_vocab_size("base", 14044) == 30522  # the bench text's pieces, in BERT-base's 30,522 rows
    assert model_vocab_size("base", 50000) == 50000  # a bigger tokenizer still fits
    assert model_vocab_size("tiny", 14044) == 14044
    with torch.device("meta"):  # the shape only: no memory, no training
        model = build_mlm_model(rows, 0, **shape.model_dump())
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(110e6, rel=0.01)
    # DESIGN.md: BERT-base ≈ 0.55 GFLOP per token at T=128 with a masked-only head
    assert flops_per_token(mlm_parameters(model, 0.15), 12, 768, 128) == pytest.approx(0.55e9, rel=0.02)



def test_gemm_peak_times_the_model_linear_layers_at_a_tiny_shape():
    from bioray.bench.gemm_peak import Gemm, best_peak, measure_peak, model_gemms, step_gemm_flops
    from bioray.config import ModelConfig

    shape = ModelConfig(layers=2, hidden=16, heads=2, intermediate=64, max_position=64, dropout=0.1)
    gemms = model_gemms(shape, tokens=64, masked=10, vocab_rows=100)
    # per layer Q, K, V, attention output and the feed-forward pair over every token; the head over masked ones
    assert gemms == [Gemm(64, 16, 16, 8), Gemm(64, 16, 64, 2), Gemm(64, 64, 16, 2), Gemm(10, 16, 16, 1),
                     Gemm(10, 16, 100, 1)]
    assert Gemm(64, 16, 64, 1).flops == 3 * 2 * 64 * 16 * 64  # forward + input and weight gradients
    assert step_gemm_flops(gemms) == sum(g.count * g.flops for g in gemms)
    measured = measure_peak(gemms, repeats=1)
    assert measured["flops_per_s"] > 0 and measured["threads"] == torch.get_num_threads()
    assert measured["dtype"] == "float32" and len(measured["shapes"]) == len(gemms)
    # the mix's rate is a FLOP-weighted harmonic mean: between the slowest and the fastest shape's
    rates = [s["flops_per_s"] for s in measured["shapes"]]
    assert min(rates) * 0.999 <= measured["flops_per_s"] <= max(rates) * 1.001
    slow, fast = {"flops_per_s": 1.0}, {"flops_per_s": 2.0}
    assert best_peak(slow, fast) is fast and best_peak(fast, slow) is fast


def test_peak_fraction_is_achieved_model_flops_over_the_measured_peak():
    from bioray.bench.pretrain import utilisation

    cpu = utilisation(tokens_per_s=200.0, per_token=0.5e9, vendor_peak=None, measured_peak=125e9)
    assert cpu == {"achieved_flops": 100e9, "mfu": None, "peak_fraction": pytest.approx(0.8)}
    gpu = utilisation(tokens_per_s=1e6, per_token=0.5e9, vendor_peak=1e15, measured_peak=6e14)
    assert gpu["mfu"] == pytest.approx(0.5) and gpu["peak_fraction"] == pytest.approx(5e14 / 6e14)


def test_step_breakdown_groups_op_self_time_by_kind():
    from bioray.bench.step_profile import KINDS, kind_of_name, profile_steps

    assert kind_of_name("aten::addmm") == kind_of_name("autograd::engine::evaluate_function: MmBackward0") == "gemm"
    assert kind_of_name("aten::_log_softmax") == "loss" and kind_of_name("aten::_softmax") == "attention"
    assert kind_of_name("aten::native_layer_norm_backward") == "layer_norm"
    assert kind_of_name("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert kind_of_name("Optimizer.step#AdamW.step") == "optimizer" and kind_of_name("aten::copy_") is None

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(50, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 16),
                                torch.nn.GELU(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 50))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(batch):
        logits = model(batch["input_ids"])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["input_ids"].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    breakdown = profile_steps(step, [{"input_ids": torch.randint(0, 50, (4, 8))}], steps=2)
    kinds = breakdown["kinds"]
    assert tuple(kinds) == KINDS and breakdown["steps"] == 2
    assert sum(k["seconds"] for k in kinds.values()) == pytest.approx(breakdown["op_seconds"])
    assert sum(k["fraction"] for k in kinds.values()) == pytest.approx(1.0)
    for kind in ("gemm", "layer_norm", "activation", "dropout", "embedding", "loss", "optimizer"):
        assert kinds[kind]["seconds"] > 0, kind  # each op the step ran found its kind

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


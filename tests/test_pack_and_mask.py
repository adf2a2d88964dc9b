import random

import numpy as np
import torch

from bioray.data.masking import IGNORE_INDEX, mask_batch
from bioray.data.pack import Sentence, pack_document

CLS, SEP, MASK = 2, 3, 4


def _sentence(start: int, n: int) -> Sentence:
    return Sentence(list(range(start, start + n)), [1] * n)


def test_packing_fills_sequences_with_consecutive_sentences():
    sentences = [_sentence(100 * i + 10, 20) for i in range(1, 6)]  # 5 x 20 tokens
    packed = pack_document(sentences, seq_len=64, cls_id=CLS, sep_id=SEP, rng=random.Random(0))
    # 61 tokens of budget per sequence: 3 sentences (60) then 2 (40)
    assert [p.length for p in packed] == [63, 43]
    first = packed[0]
    assert first.input_ids[0] == CLS and first.input_ids[62] == SEP and first.input_ids[63] == 0
    real = [t for t in first.input_ids[: first.length] if t not in (CLS, SEP)]
    assert real == [t for s in sentences[:3] for t in s.ids]  # order kept, nothing lost
    seps = np.flatnonzero(first.input_ids == SEP)
    assert len(seps) == 2  # [CLS] A [SEP] B [SEP]
    assert (first.token_type_ids[: seps[0] + 1] == 0).all() and (first.token_type_ids[seps[0] + 1: seps[1] + 1] == 1).all()
    assert first.word_start[0] == 0 and first.word_start[1] == 1


def test_long_sentence_is_split_not_truncated():
    packed = pack_document([_sentence(10, 150)], seq_len=64, cls_id=CLS, sep_id=SEP, rng=random.Random(0))
    tokens = [t for p in packed for t in p.input_ids[: p.length] if t not in (CLS, SEP)]
    assert tokens == list(range(10, 160))
    assert all(p.length <= 64 for p in packed)


def _batch(n=64, seq_len=128, length=100):
    ids = np.random.default_rng(0).integers(10, 1000, size=(n, seq_len)).astype(np.int32)
    ids[:, 0] = CLS
    ids[:, length - 1] = SEP
    ids[:, length:] = 0
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids, dtype=np.int8), "length": np.full(n, length)}


def test_masking_rate_specials_and_padding():
    batch = _batch()
    out = mask_batch(batch, 0.15, MASK, 1000, [0, 1, CLS, SEP, MASK], torch.Generator().manual_seed(0))
    chosen = out["labels"] != IGNORE_INDEX
    rate = chosen.sum().item() / (64 * 98)
    assert 0.12 < rate < 0.18
    assert not chosen[:, 0].any() and not chosen[:, 99:].any()  # [CLS], [SEP], padding never chosen
    original = torch.from_numpy(batch["input_ids"].astype(np.int64))
    assert torch.equal(out["labels"][chosen], original[chosen])
    as_mask = (out["input_ids"] == MASK) & chosen
    assert 0.7 < as_mask.sum().item() / chosen.sum().item() < 0.9
    assert out["attention_mask"][:, :100].all() and not out["attention_mask"][:, 100:].any()


def test_masking_is_dynamic():
    batch = _batch()
    generator = torch.Generator().manual_seed(0)
    first = mask_batch(batch, 0.15, MASK, 1000, [CLS, SEP], generator)["labels"]
    second = mask_batch(batch, 0.15, MASK, 1000, [CLS, SEP], generator)["labels"]
    assert not torch.equal(first, second)


def test_masking_accepts_ray_object_columns():
    batch = _batch(n=4)
    batch["input_ids"] = np.array(list(batch["input_ids"]), dtype=object)
    batch["token_type_ids"] = np.array(list(batch["token_type_ids"]), dtype=object)
    out = mask_batch(batch, 0.3, MASK, 1000, [CLS, SEP], torch.Generator().manual_seed(1))
    assert out["input_ids"].shape == (4, 128)


def test_stream_packing_fills_every_position_and_keeps_order():
    from bioray.data.pack import pack_stream

    documents = [[_sentence(1000 * d + 100 * i, 17 + i) for i in range(4)] for d in range(1, 6)]  # 5 docs x 4 sentences
    packed = pack_stream(documents, seq_len=32, cls_id=CLS, sep_id=SEP, rng=random.Random(0))
    stream = [t for doc in documents for s in doc for t in s.ids]
    assert all(seq.length == 32 for _, seq in packed[:-1])  # only the last sequence is partial
    real = [t for _, seq in packed for t in seq.input_ids[: seq.length] if t not in (CLS, SEP)]
    assert real == stream  # nothing lost, nothing repeated, order kept
    sentence_firsts = {s.ids[0] for doc in documents for s in doc}
    for _, seq in packed[:-1]:  # sentences are shorter than a sequence: each full one holds a boundary
        seps = np.flatnonzero(seq.input_ids == SEP)
        assert len(seps) == 2 and int(seq.input_ids[seps[0] + 1]) in sentence_firsts  # B starts a sentence
    owners = [owner for owner, _ in packed]
    assert owners == sorted(owners) and owners[0] == 0 and owners[-1] == 4
    fill = sum(seq.length for _, seq in packed) / (32 * len(packed))
    assert fill > 0.97

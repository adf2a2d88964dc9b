"""Packing: consecutive sentences of one document -> fixed-length BERT sequences.

Each sequence is `[CLS] A [SEP] B [SEP]` where A and B are runs of consecutive sentences (B may be
empty when only one sentence fits), so almost every position holds a real token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PackedSequence:
    input_ids: np.ndarray      # int32 [seq_len], 0-padded
    token_type_ids: np.ndarray  # int8 [seq_len]
    word_start: np.ndarray     # int8 [seq_len]: 1 where a token begins a word (whole-word masking)
    length: int                # real tokens, specials included


@dataclass
class Sentence:
    ids: list[int]
    starts: list[int] = field(default_factory=list)


def _split_long(sentence: Sentence, limit: int) -> list[Sentence]:
    """A sentence longer than a whole sequence is cut into consecutive pieces."""
    return [Sentence(sentence.ids[i:i + limit], sentence.starts[i:i + limit]) for i in range(0, len(sentence.ids), limit)]


def pack_document(sentences: list[Sentence], seq_len: int, cls_id: int, sep_id: int, rng: random.Random) -> list[PackedSequence]:
    """Greedy packing of one document's sentences into sequences of at most seq_len tokens."""
    budget = seq_len - 3  # [CLS] and two [SEP]
    pieces = [p for s in sentences if s.ids for p in _split_long(s, budget)]
    groups, current, size = [], [], 0
    for piece in pieces:
        if current and size + len(piece.ids) > budget:
            groups.append(current)
            current, size = [], 0
        current.append(piece)
        size += len(piece.ids)
    if current:
        groups.append(current)
    return [_build(group, seq_len, cls_id, sep_id, rng) for group in groups]


def _build(group: list[Sentence], seq_len: int, cls_id: int, sep_id: int, rng: random.Random) -> PackedSequence:
    cut = rng.randint(1, len(group) - 1) if len(group) > 1 else len(group)
    a, b = group[:cut], group[cut:]
    ids = [cls_id] + [t for s in a for t in s.ids] + [sep_id]
    starts = [0] + [f for s in a for f in s.starts] + [0]
    types = [0] * len(ids)
    if b:
        b_ids = [t for s in b for t in s.ids] + [sep_id]
        ids += b_ids
        starts += [f for s in b for f in s.starts] + [0]
        types += [1] * len(b_ids)
    length = len(ids)
    pad = seq_len - length
    return PackedSequence(
        input_ids=np.asarray(ids + [0] * pad, dtype=np.int32),
        token_type_ids=np.asarray(types + [0] * pad, dtype=np.int8),
        word_start=np.asarray(starts + [0] * pad, dtype=np.int8),
        length=length,
    )

"""Packing: consecutive sentences -> fixed-length BERT sequences `[CLS] A [SEP] B [SEP]`.

Two ways, `tokenize.packing`:
- `document` (BERT's recipe): a sequence holds whole consecutive sentences of one document. Short
  documents and sentence boundaries leave padding (fill about 0.75 on abstracts at 128 tokens).
- `stream` (MosaicBERT/ModernBERT): documents back to back, each sequence filled to its last
  position; a sentence may continue in the next sequence, and A/B are split at a sentence or
  document boundary inside the sequence. No compute is spent on padding.
"""

from __future__ import annotations

import bisect
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
    return assemble([t for s in a for t in s.ids], [f for s in a for f in s.starts],
                    [t for s in b for t in s.ids], [f for s in b for f in s.starts], seq_len, cls_id, sep_id)


def assemble(a_ids: list[int], a_starts: list[int], b_ids: list[int], b_starts: list[int], seq_len: int,
             cls_id: int, sep_id: int) -> PackedSequence:
    """`[CLS] A [SEP] B [SEP]` (or `[CLS] A [SEP]` when B is empty), padded to seq_len."""
    ids = [cls_id, *a_ids, sep_id]
    starts = [0, *a_starts, 0]
    types = [0] * len(ids)
    if b_ids:
        ids += [*b_ids, sep_id]
        starts += [*b_starts, 0]
        types += [1] * (len(b_ids) + 1)
    length = len(ids)
    pad = seq_len - length
    return PackedSequence(
        input_ids=np.asarray(ids + [0] * pad, dtype=np.int32),
        token_type_ids=np.asarray(types + [0] * pad, dtype=np.int8),
        word_start=np.asarray(starts + [0] * pad, dtype=np.int8),
        length=length,
    )


def pack_stream(documents: list[list[Sentence]], seq_len: int, cls_id: int, sep_id: int,
                rng: random.Random) -> list[tuple[int, PackedSequence]]:
    """Documents back to back, cut every seq_len - 3 tokens; only the very last sequence is partial.

    Returns (index of the document the sequence starts in, sequence) pairs.
    """
    budget = seq_len - 3
    ids: list[int] = []
    starts: list[int] = []
    boundaries: list[int] = []  # stream positions where a sentence (or document) begins
    document_starts: list[int] = []
    for sentences in documents:
        document_starts.append(len(ids))
        for sentence in sentences:
            if sentence.ids:
                boundaries.append(len(ids))
                ids += sentence.ids
                starts += sentence.starts
    sequences = []
    for begin in range(0, len(ids), budget):
        end = min(begin + budget, len(ids))
        inner = boundaries[bisect.bisect_right(boundaries, begin):bisect.bisect_left(boundaries, end)]
        cut = rng.choice(inner) if inner else (begin + end + 1) // 2
        owner = bisect.bisect_right(document_starts, begin) - 1
        sequences.append((owner, assemble(ids[begin:cut], starts[begin:cut], ids[cut:end], starts[cut:end],
                                          seq_len, cls_id, sep_id)))
    return sequences

"""Packing: a batch's token stream -> fixed-length BERT sequences `[CLS] A [SEP] B [SEP]`.

Input is the batch as flat arrays: every token of every document back to back (`ids`, `word_start`),
the stream positions where a sentence begins (`boundaries`, document starts included) and where each
document begins (`doc_starts`). Two ways, `tokenize.packing`:
- `stream` (MosaicBERT/ModernBERT): the stream cut every seq_len - 3 tokens, so every position but
  the batch's last is filled; A/B are split at a random sentence boundary inside the sequence. All
  numpy, no per-sequence Python: this is the default and the fast path.
- `document` (BERT's recipe): a sequence holds whole consecutive sentences of one document; short
  documents leave padding. Optional next-sentence-prediction pairs: half the B segments replaced by
  sentences of another document (`next_sentence_label` 1).
"""

from __future__ import annotations

import numpy as np

from bioray.constants import IGNORE_INDEX

SPECIALS = 3  # [CLS] and two [SEP]


def _layout(begin: np.ndarray, a_len: np.ndarray, b_len: np.ndarray, b_begin: np.ndarray, ids: np.ndarray,
            word_start: np.ndarray, seq_len: int, cls_id: int, sep_id: int) -> dict[str, np.ndarray]:
    """Sequences `[CLS] ids[begin:begin+a_len] [SEP] ids[b_begin:b_begin+b_len] [SEP]`, 0-padded.

    A row with b_len 0 is `[CLS] A [SEP]`.
    """
    position = np.arange(seq_len)[None, :]
    a = a_len[:, None]
    b = b_len[:, None]
    in_a = (position >= 1) & (position <= a)
    in_b = (position >= a + 2) & (position < a + 2 + b)
    source = np.where(in_a, begin[:, None] + position - 1, b_begin[:, None] + position - a - 2)
    source = np.where(in_a | in_b, source, 0)
    input_ids = np.where(in_a | in_b, ids[source], 0).astype(np.int32)
    input_ids[:, 0] = cls_id
    input_ids[position == a + 1] = sep_id
    np.putmask(input_ids, (position == a + 2 + b) & (b > 0), sep_id)
    length = 1 + a_len + 1 + np.where(b_len > 0, b_len + 1, 0)
    return {
        "input_ids": input_ids,
        "token_type_ids": ((position >= a + 2) & (position < length[:, None])).astype(np.int8),
        "word_start": np.where(in_a | in_b, word_start[source], 0).astype(np.int8),
        "length": length.astype(np.int32),
    }


def pack_stream(ids: np.ndarray, word_start: np.ndarray, boundaries: np.ndarray, doc_starts: np.ndarray,
                seq_len: int, cls_id: int, sep_id: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The stream cut every seq_len - 3 tokens; returns the sequence arrays plus `doc_index`.

    `doc_index` is the document each sequence starts in. Where no sentence begins strictly inside a
    sequence, A/B are split in the middle.
    """
    budget = seq_len - SPECIALS
    total = len(ids)
    begin = np.arange(0, total, budget)
    end = np.minimum(begin + budget, total)
    first = np.searchsorted(boundaries, begin, side="right")  # boundaries strictly inside (begin, end)
    count = np.searchsorted(boundaries, end, side="left") - first
    pick = first + np.floor(rng.random(len(begin)) * np.maximum(count, 1)).astype(np.int64)
    cut = np.where(count > 0, boundaries[np.minimum(pick, len(boundaries) - 1)] if len(boundaries) else 0,
                   (begin + end + 1) // 2)
    packed = _layout(begin, cut - begin, end - cut, cut, ids, word_start, seq_len, cls_id, sep_id)
    packed["doc_index"] = np.searchsorted(doc_starts, begin, side="right") - 1
    return packed


def _groups(sentence_begin: np.ndarray, sentence_end: np.ndarray, budget: int) -> list[tuple[int, int, list[int]]]:
    """Greedy groups of one document's consecutive sentences within budget tokens.

    Returns (begin, end, inner sentence starts) per group; a sentence longer than budget is cut into
    budget-sized pieces, never truncated.
    """
    pieces = [(p, min(p + budget, end)) for begin, end in zip(sentence_begin.tolist(), sentence_end.tolist())
              for p in range(begin, end, budget)]
    groups, current = [], []
    for piece in pieces:
        if current and piece[1] - current[0][0] > budget:
            groups.append(current)
            current = []
        current.append(piece)
    if current:
        groups.append(current)
    return [(g[0][0], g[-1][1], [p[0] for p in g[1:]]) for g in groups]


def pack_documents(ids: np.ndarray, word_start: np.ndarray, boundaries: np.ndarray, doc_starts: np.ndarray,
                   seq_len: int, cls_id: int, sep_id: int, rng: np.random.Generator,
                   nsp: bool = False) -> dict[str, np.ndarray]:
    """Whole consecutive sentences of one document per sequence; A/B split at a random inner sentence.

    With nsp, half the sequences that have a B get a random B instead: as many tokens, starting at a
    sentence of another document in the batch (`next_sentence_label` 1; 0 for a true continuation;
    IGNORE_INDEX, ignored by the loss, for a sequence of one segment).
    """
    budget = seq_len - SPECIALS
    doc_ends = np.append(doc_starts[1:], len(ids))
    rows = []  # (doc, begin, cut, end)
    for doc, (start, stop) in enumerate(zip(doc_starts.tolist(), doc_ends.tolist())):
        if stop <= start:
            continue
        inner = boundaries[(boundaries > start) & (boundaries < stop)]
        sentence_begin = np.concatenate([[start], inner])
        for begin, end, cuts in _groups(sentence_begin, np.append(inner, stop), budget):
            cut = cuts[rng.integers(len(cuts))] if cuts else end
            rows.append((doc, begin, cut, end))
    table = np.array(rows, dtype=np.int64).reshape(-1, 4)
    doc, begin, cut, end = table.T
    b_begin, b_len = cut.copy(), end - cut
    label = np.zeros(len(table), dtype=np.int8)
    if nsp and len(doc_starts) > 1:
        swap = (b_len > 0) & (rng.random(len(table)) < 0.5)
        for row in np.flatnonzero(swap):
            others = boundaries[(boundaries < doc_starts[doc[row]]) | (boundaries >= doc_ends[doc[row]])]
            if len(others):
                b_begin[row] = others[rng.integers(len(others))]
                other = np.searchsorted(doc_starts, b_begin[row], side="right") - 1
                b_len[row] = min(b_len[row], doc_ends[other] - b_begin[row])  # B from that one document
                label[row] = 1
    packed = _layout(begin, cut - begin, b_len, b_begin, ids, word_start, seq_len, cls_id, sep_id)
    packed["doc_index"] = doc
    if nsp:
        packed["next_sentence_label"] = np.where(b_len > 0, label, np.int8(IGNORE_INDEX)).astype(np.int8)
    return packed

"""Held-out masked-LM loss that compares encoders with different vocabularies: the domain matrix.

Each corpus gives the same words to every encoder: its held-out documents (the tokenize stage's seeded
slice, so never trained on by a model pretrained on that corpus), taken in a seeded order up to a word
budget. Whole words are masked, chosen by a seeded draw per word, so every encoder predicts the same
words from the same context; a word's loss is the sum of its pieces' losses. The loss per word is
comparable across vocabularies (a vocabulary that cuts a word into more pieces must predict them all);
the loss per piece is what pretraining's own held-out loss measures, and is not.
"""

from __future__ import annotations

import hashlib
import heapq
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import torch

from bioray.data.ingest import seeded_slice

MASK_RATE = 0.15  # of the words, as BERT masks tokens


def _order(seed: int, doc_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"heldout-order:{seed}:{doc_id}".encode()).digest()[:8], "little")


def heldout_documents(documents: Path, fraction: float, seed: int, words: int) -> list[tuple[str, list[str]]]:
    """(doc id, words) of the held-out documents first in a seeded order, until about `words` words. One
    pass over the corpus, holding only what is kept (bounded by the budget, not by the corpus)."""
    kept: list[tuple[int, str, list[str]]] = []  # a max-heap on the order (negated)
    total = 0
    for batch in ds.dataset(str(documents), format="parquet").to_batches(columns=["doc_id", "text"]):
        ids = batch.column("doc_id").to_pylist()
        chosen = np.flatnonzero(seeded_slice(ids, fraction, seed, "heldout"))
        texts = batch.column("text").take(chosen).to_pylist() if len(chosen) else []
        for index, text in zip(chosen, texts):
            doc_words = text.split()
            heapq.heappush(kept, (-_order(seed, ids[index]), ids[index], doc_words))
            total += len(doc_words)
            while total - len(kept[0][2]) >= words:  # the last in order is not needed to reach the budget
                total -= len(heapq.heappop(kept)[2])
    return [(doc_id, doc_words) for _, doc_id, doc_words in sorted(kept, reverse=True)]


def _windows(piece_ids: list[list[int]], limit: int) -> list[tuple[int, int]]:
    """Word ranges [start, end) whose pieces fit `limit`; a word longer than the limit alone is skipped."""
    windows, start, length = [], 0, 0
    for index, pieces in enumerate(piece_ids):
        if length + len(pieces) > limit:
            if index > start:
                windows.append((start, index))
            start, length = index, 0
            if len(pieces) > limit:
                start = index + 1
                continue
        length += len(pieces)
    if len(piece_ids) > start:
        windows.append((start, len(piece_ids)))
    return windows


def score(model_dir: Path, corpora: dict[str, list[tuple[str, list[str]]]], seq_len: int,
          seed: int = 0) -> dict[str, dict[str, float]]:
    """Whole-word masked-LM loss of the encoder in `model_dir` (an HF folder with its masked-LM head and
    tokenizer) on each corpus's documents (label -> [(doc id, words)]), the model loaded once: per word,
    per masked piece, piece accuracy, pieces per word."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForMaskedLM.from_pretrained(str(model_dir)).eval()
    return {label: _score(model, tokenizer, documents, seq_len, seed) for label, documents in corpora.items()}


@torch.no_grad()
def _score(model, tokenizer, documents: list[tuple[str, list[str]]], seq_len: int, seed: int,
           batch_size: int = 32) -> dict[str, float]:
    sequences: list[tuple[list[int], list[int]]] = []  # (input ids, the word index of each masked piece or -1)
    words_total = pieces_total = 0
    for doc_id, doc_words in documents:
        if not doc_words:
            continue
        piece_ids = tokenizer(doc_words, add_special_tokens=False)["input_ids"]
        words_total += len(doc_words)
        pieces_total += sum(len(p) for p in piece_ids)
        chosen = np.random.default_rng(_order(seed, doc_id)).random(len(doc_words)) < MASK_RATE
        for start, end in _windows(piece_ids, seq_len - 2):
            ids, owner = [tokenizer.cls_token_id], [-1]
            for word in range(start, end):
                ids += piece_ids[word]
                owner += [word if chosen[word] else -1] * len(piece_ids[word])
            sequences.append((ids + [tokenizer.sep_token_id], owner + [-1]))
    loss, masked_words, masked_pieces, correct = 0.0, 0, 0, 0  # summed over pieces: a word's loss is its pieces'
    for first in range(0, len(sequences), batch_size):
        batch = sequences[first:first + batch_size]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        owners = torch.full((len(batch), width), -1)
        for row, (ids, owner) in enumerate(batch):
            input_ids[row, :len(ids)], owners[row, :len(ids)] = torch.tensor(ids), torch.tensor(owner)
        masked = owners >= 0
        if not masked.any():
            continue
        labels = input_ids[masked]
        inputs = input_ids.masked_fill(masked, tokenizer.mask_token_id)
        logits = model(input_ids=inputs, attention_mask=(input_ids != tokenizer.pad_token_id).long()).logits[masked]
        loss += float(torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
        rows = torch.nonzero(masked)[:, 0]
        masked_words += len(torch.unique(rows * (int(owners.max()) + 1) + owners[masked]))  # (row, word) pairs
        masked_pieces += len(labels)
        correct += int((logits.argmax(-1) == labels).sum())
    if not masked_words:
        raise ValueError(f"no held-out words to score (documents: {len(documents)}); raise the word budget or "
                         "tokenize.heldout_fraction")
    return {"loss_per_word": loss / masked_words, "loss_per_piece": loss / masked_pieces,
            "accuracy": correct / masked_pieces, "subwords_per_word": pieces_total / max(words_total, 1),
            "masked_words": masked_words, "words": words_total}

"""The unigram loss of a token stream: the MLM loss of a model that ignores the context and predicts
every masked token from the vocabulary's frequencies. Held-out MLM loss near it means the encoder
has learned nothing but those frequencies (the plateau small-budget BERT training can stall on)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bioray.data.streaming import row_group_tables


def unigram_counts(sequences_dir: Path, vocab_size: int, special_ids: list[int],
                   max_sequences: int = 50_000) -> np.ndarray:
    """How often each token id occurs among the real, non-special tokens of up to max_sequences packed
    sequences (special ids count 0)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    seen = 0
    for batch in row_group_tables(sequences_dir, columns=["input_ids", "length"]):
        ids = np.stack(batch.column("input_ids").to_numpy(zero_copy_only=False))
        real = np.arange(ids.shape[1])[None, :] < batch.column("length").to_numpy()[:, None]
        counts += np.bincount(ids[real], minlength=vocab_size)[:vocab_size]
        seen += len(ids)
        if seen >= max_sequences:
            break
    counts[special_ids] = 0
    return counts


def unigram_loss(counts: np.ndarray) -> float:
    """Entropy (nats) of the token distribution the counts describe."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def log_prior(counts: np.ndarray) -> np.ndarray:
    """Log unigram probabilities, add-one smoothed (an id never seen gets a low but finite logit): the
    MLM output bias that makes an untrained encoder predict the unigram distribution."""
    smoothed = counts.astype(np.float64) + 1.0
    return np.log(smoothed / smoothed.sum()).astype(np.float32)

"""The unigram loss of a token stream: the MLM loss of a model that ignores the context and predicts
every masked token from the vocabulary's frequencies. Held-out MLM loss near it means the encoder
has learned nothing but those frequencies (the plateau small-budget BERT training can stall on)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.dataset as pads


def unigram_loss(sequences_dir: Path, vocab_size: int, special_ids: list[int], max_sequences: int = 50_000) -> float:
    """Entropy (nats) of the real, non-special tokens of up to max_sequences packed sequences."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    seen = 0
    for batch in pads.dataset(str(sequences_dir), format="parquet").to_batches(columns=["input_ids", "length"]):
        ids = np.stack(batch.column("input_ids").to_numpy(zero_copy_only=False))
        real = np.arange(ids.shape[1])[None, :] < batch.column("length").to_numpy()[:, None]
        counts += np.bincount(ids[real], minlength=vocab_size)[:vocab_size]
        seen += len(ids)
        if seen >= max_sequences:
            break
    counts[special_ids] = 0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())

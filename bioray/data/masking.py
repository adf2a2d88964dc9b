"""Dynamic MLM masking in the collate step: a new mask every time a sequence is seen."""

from __future__ import annotations

import numpy as np
import torch

from bioray.constants import IGNORE_INDEX


def stack_column(column) -> np.ndarray:
    """Ray Data hands list columns over as object arrays of equal-length arrays."""
    return np.stack(column) if column.dtype == object else np.asarray(column)


def mask_batch(batch: dict, mask_rate: float, mask_id: int, vocab_size: int, special_ids: list[int],
               generator: torch.Generator, whole_word: bool = False) -> dict[str, torch.Tensor]:
    """BERT masking: choose mask_rate of the real tokens; of those 80% [MASK], 10% random, 10% kept.

    Special tokens and padding are never chosen. Labels are IGNORE_INDEX where nothing is predicted.
    With whole_word, words are chosen (each with probability mask_rate) and all their word pieces
    with them, using the `word_start` flags written by the tokenize stage.
    """
    input_ids = torch.from_numpy(stack_column(batch["input_ids"]).astype(np.int64))
    token_type_ids = torch.from_numpy(stack_column(batch["token_type_ids"]).astype(np.int64))
    lengths = torch.tensor(np.asarray(batch["length"]), dtype=torch.int64)
    positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
    attention_mask = (positions < lengths.unsqueeze(1)).long()

    candidates = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_ids))
    if whole_word:
        word_start = torch.from_numpy(stack_column(batch["word_start"]).astype(np.int64))
        word_index = torch.cumsum(word_start, dim=1)  # the pieces of one word share an index
        per_word = torch.rand((input_ids.shape[0], input_ids.shape[1] + 1), generator=generator) < mask_rate
        chosen = per_word.gather(1, word_index) & candidates
    else:
        chosen = (torch.rand(input_ids.shape, generator=generator) < mask_rate) & candidates
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))

    action = torch.rand(input_ids.shape, generator=generator)
    masked = input_ids.clone()
    masked[chosen & (action < 0.8)] = mask_id
    random_tokens = torch.randint(vocab_size, input_ids.shape, generator=generator)
    swap = chosen & (action >= 0.8) & (action < 0.9)
    masked[swap] = random_tokens[swap]
    return {"input_ids": masked, "token_type_ids": token_type_ids, "attention_mask": attention_mask, "labels": labels}

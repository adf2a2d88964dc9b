"""Dynamic padding: a batch's rows padded to its longest one."""

from __future__ import annotations

import torch


def pad_rows(rows: list[list[int]], value: int) -> torch.Tensor:
    """Rows of different lengths as one (batch, longest) tensor, filled with value past each row's end."""
    padded = torch.full((len(rows), max(len(row) for row in rows)), value, dtype=torch.long)
    for index, row in enumerate(rows):
        padded[index, : len(row)] = torch.tensor(row, dtype=torch.long)
    return padded


def attention_mask(rows: list[list[int]]) -> torch.Tensor:
    return pad_rows([[1] * len(row) for row in rows], 0)


def pad_inputs(features: list, pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, token_type_ids and attention_mask of a batch, padded to its longest input."""
    ids = [f.input_ids for f in features]
    return {"input_ids": pad_rows(ids, pad_id), "token_type_ids": pad_rows([f.token_type_ids for f in features], 0),
            "attention_mask": attention_mask(ids)}

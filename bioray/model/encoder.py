"""The encoder: a Hugging Face BertForMaskedLM (SDPA attention) and its masked-only MLM loss."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM

from bioray.config import ModelConfig
from bioray.data.masking import IGNORE_INDEX


def build_mlm_model(shape: ModelConfig, vocab_size: int, pad_id: int, init_checkpoint: Path | None = None) -> BertForMaskedLM:
    """From scratch with the given shape, or from an HF checkpoint (continued pretraining)."""
    if init_checkpoint is not None:
        return BertForMaskedLM.from_pretrained(str(init_checkpoint), attn_implementation="sdpa")
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, intermediate_size=shape.intermediate,
        max_position_embeddings=shape.max_position, hidden_dropout_prob=shape.dropout,
        attention_probs_dropout_prob=shape.dropout, pad_token_id=pad_id, attn_implementation="sdpa",
    )
    return BertForMaskedLM(config)


def masked_lm_loss(model: BertForMaskedLM, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss with the MLM decoder applied only to masked positions (about 15% of tokens).

    Returns (loss, number of correct predictions, number of masked tokens).
    """
    hidden = model.bert(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                        attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"]
    selected = labels != IGNORE_INDEX
    logits = model.cls(hidden[selected])
    targets = labels[selected]
    loss = F.cross_entropy(logits.float(), targets) if targets.numel() else hidden.sum() * 0.0
    correct = (logits.argmax(-1) == targets).sum()
    return loss, correct, selected.sum()

"""The encoder: a Hugging Face BertForMaskedLM (SDPA attention), or BertForPreTraining when the NSP
head is on, and its pretraining loss with the MLM decoder on masked positions only."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM, BertForPreTraining

from bioray.config import ModelConfig
from bioray.data.masking import IGNORE_INDEX

# What pretraining_loss counts per micro-batch (summed over a logging window and over workers).
STATS = ("mlm_loss", "mlm_correct", "masked", "nsp_loss", "nsp_correct", "pairs")


def build_mlm_model(shape: ModelConfig, vocab_size: int, pad_id: int, init_checkpoint: Path | None = None,
                    nsp: bool = False) -> BertForMaskedLM | BertForPreTraining:
    """From scratch with the given shape, or from an HF checkpoint (continued pretraining).

    With nsp, BertForPreTraining (pooler + next-sentence head beside the MLM head); its saved
    weights still load as AutoModelForMaskedLM (the extra head is ignored) and give fine-tuning a
    trained pooler.
    """
    model_class = BertForPreTraining if nsp else BertForMaskedLM
    if init_checkpoint is not None:
        return model_class.from_pretrained(str(init_checkpoint), attn_implementation="sdpa", use_safetensors=True)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, intermediate_size=shape.intermediate,
        max_position_embeddings=shape.max_position, hidden_dropout_prob=shape.dropout,
        attention_probs_dropout_prob=shape.dropout, pad_token_id=pad_id, attn_implementation="sdpa",
    )
    return model_class(config)


def pretraining_loss(model: BertForMaskedLM | BertForPreTraining,
                     batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """MLM loss with the decoder applied only to masked positions (about 15% of tokens), plus the
    NSP loss when the model has that head and the batch has `next_sentence_label` (-100 = no pair).

    Returns (loss, a float64 tensor of the STATS counts of this micro-batch).
    """
    encoded = model.bert(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                         attention_mask=batch["attention_mask"])
    labels = batch["labels"]
    selected = labels != IGNORE_INDEX
    logits = model.cls.predictions(encoded.last_hidden_state[selected])
    targets = labels[selected]
    # An empty selection still yields a (zero) loss through the head: every parameter gets a gradient
    # on every rank, so ZeRO's gradient buckets have the same layout everywhere.
    mlm_loss = F.cross_entropy(logits.float(), targets) if targets.numel() else logits.sum() * 0.0
    stats = [mlm_loss.detach(), (logits.argmax(-1) == targets).sum(), selected.sum()]

    loss, nsp_loss, nsp_correct, pairs = mlm_loss, torch.zeros(()), 0, 0
    if isinstance(model, BertForPreTraining) and "next_sentence_label" in batch:
        nsp_labels = batch["next_sentence_label"]
        paired = nsp_labels != IGNORE_INDEX
        nsp_logits = model.cls.seq_relationship(encoded.pooler_output[paired])
        nsp_loss = F.cross_entropy(nsp_logits.float(), nsp_labels[paired]) if paired.any() else nsp_logits.sum() * 0.0
        loss = loss + nsp_loss
        nsp_correct, pairs = (nsp_logits.argmax(-1) == nsp_labels[paired]).sum(), paired.sum()
    stats += [nsp_loss.detach(), nsp_correct, pairs]
    return loss, torch.tensor([float(s) for s in stats], dtype=torch.float64)

"""The encoder: a Hugging Face BertForMaskedLM (SDPA attention), or BertForPreTraining when the NSP
head is on, and its pretraining loss (unpadded encoder, MLM decoder on masked positions only)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM, BertForPreTraining, BertModel

from bioray.constants import IGNORE_INDEX
from bioray.model.unpad import (
    compile_dense_blocks,
    encode_unpadded,
    use_unpadded_forward,
)

log = logging.getLogger(__name__)

# What pretraining_loss counts per micro-batch (summed over a logging window and over workers).
STATS = ("mlm_loss", "mlm_correct", "masked", "nsp_loss", "nsp_correct", "pairs")


def build_mlm_model(vocab_size: int, pad_id: int, *, layers: int = 12, hidden: int = 768, heads: int = 12,
                    intermediate: int = 3072, max_position: int = 512, dropout: float = 0.1,
                    init_checkpoint: Path | None = None, nsp: bool = False) -> BertForMaskedLM | BertForPreTraining:
    """From scratch with the given shape (BERT-base by default), or from an HF checkpoint (continued
    pretraining; the shape is the checkpoint's).

    With nsp, BertForPreTraining (pooler + next-sentence head beside the MLM head); its saved
    weights still load as AutoModelForMaskedLM (the extra head is ignored) and give fine-tuning a
    trained pooler.
    """
    model_class = BertForPreTraining if nsp else BertForMaskedLM
    if init_checkpoint is not None:
        return model_class.from_pretrained(str(init_checkpoint), attn_implementation="sdpa", use_safetensors=True)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate, max_position_embeddings=max_position, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, pad_token_id=pad_id, attn_implementation="sdpa",
    )
    return model_class(config)


def apply_fast_path(model, *, unpad: bool = True, attention: str = "sdpa", compile: bool = False):
    """The fast-path switches that change a model instance (the others act in the loss or the
    optimizer): the unpadded encoder forward and compiled dense blocks, on any HF head over a BERT
    encoder."""
    encoder = model.base_model
    if not isinstance(encoder, BertModel):
        log.warning("fast.unpad and fast.compile apply to BERT encoders; %s runs as it is", type(encoder).__name__)
        return model
    if unpad:
        use_unpadded_forward(encoder, attention)
    if compile:
        compile_dense_blocks(encoder)
    return model


def pretraining_loss(model: BertForMaskedLM | BertForPreTraining, batch: dict[str, torch.Tensor], *,
                     unpad: bool = True, attention: str = "sdpa",
                     masked_only_decoder: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MLM loss, plus the NSP loss when the model has that head and the batch has
    `next_sentence_label` (-100 = no pair). With the default fast path the encoder runs on real
    tokens only and the decoder only on the masked ones (about 15% of tokens); each can be switched
    off, for the plain HF computation of the same loss.

    Returns (loss, a float64 tensor of the STATS counts of this micro-batch, on the loss's device).
    """
    if unpad:
        hidden, real = encode_unpadded(model.bert, batch["input_ids"], batch["attention_mask"],
                                       batch["token_type_ids"], attention)
        labels = real.gather(batch["labels"])
    else:
        padded = model.bert(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                            attention_mask=batch["attention_mask"]).last_hidden_state
        hidden, labels, real = padded.flatten(0, 1), batch["labels"].flatten(), None
    selected = labels != IGNORE_INDEX
    targets = labels[selected]
    if masked_only_decoder:
        logits = model.cls.predictions(hidden[selected])
    else:  # HF's way: the hidden x vocabulary decoder on every token, then the masked ones picked
        logits = model.cls.predictions(hidden)[selected]
    # An empty selection still yields a (zero) loss through the head: every parameter gets a gradient
    # on every rank, so ZeRO's gradient buckets have the same layout everywhere.
    mlm_loss = F.cross_entropy(logits.float(), targets) if targets.numel() else logits.sum() * 0.0
    stats = [mlm_loss.detach(), (logits.argmax(-1) == targets).sum(), selected.sum()]

    loss, nsp_loss, nsp_correct, pairs = mlm_loss, torch.zeros(()), 0, 0
    if isinstance(model, BertForPreTraining) and "next_sentence_label" in batch:
        nsp_labels = batch["next_sentence_label"]
        paired = nsp_labels != IGNORE_INDEX
        sequence = real.scatter(hidden) if real is not None else hidden.view(*batch["input_ids"].shape, -1)
        pooled = model.bert.pooler(sequence)  # the [CLS] position of each sequence
        nsp_logits = model.cls.seq_relationship(pooled[paired])
        nsp_loss = F.cross_entropy(nsp_logits.float(), nsp_labels[paired]) if paired.any() else nsp_logits.sum() * 0.0
        loss = loss + nsp_loss
        nsp_correct, pairs = (nsp_logits.argmax(-1) == nsp_labels[paired]).sum(), paired.sum()
    stats += [nsp_loss.detach(), nsp_correct, pairs]
    # Stays on the loss's device: no host sync per micro-batch (the window is read at logging time).
    return loss, torch.stack([torch.as_tensor(s, device=loss.device).double() for s in stats])

"""The unpadded encoder: every BERT layer runs on the real tokens of a batch only.

A padded batch (B, T) with its attention_mask becomes one (nnz, hidden) tensor of its real tokens.
The dense layers (Q/K/V, attention output, feed-forward: almost all of the FLOPs) run on nnz rows
instead of B*T, and attention runs per sequence: through flash-attn's variable-length kernel where
it can, otherwise through SDPA over a padded copy of Q/K/V with a key mask. The HF module tree and
its weights are untouched, so checkpoints stay plain HF checkpoints.
"""

from __future__ import annotations

import functools
import logging
import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

log = logging.getLogger(__name__)


@dataclass
class RealTokens:
    """Where a batch's real tokens are: flat positions in B*T, per-sequence offsets for varlen kernels."""

    indices: torch.Tensor  # positions of the real tokens in the flattened (B*T) batch
    cu_seqlens: torch.Tensor  # int32 (B+1,): sequence b owns real tokens cu_seqlens[b]:cu_seqlens[b+1]
    max_len: int
    shape: tuple[int, int]  # (B, T)
    key_mask: torch.Tensor  # bool (B, 1, 1, T) for SDPA
    full: bool  # no padding at all: the flat tensors are views, attention needs no mask

    @classmethod
    def of(cls, attention_mask: torch.Tensor) -> RealTokens:
        mask = attention_mask.bool()
        lengths = mask.sum(1, dtype=torch.int32)
        indices = mask.flatten().nonzero().squeeze(1)
        batch, length = mask.shape
        return cls(indices=indices, cu_seqlens=F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0)),
                   max_len=int(lengths.max()) if batch else 0, shape=(batch, length), key_mask=mask[:, None, None, :],
                   full=indices.numel() == batch * length)

    def gather(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (nnz, ...)."""
        flat = padded.reshape(-1, *padded.shape[2:])
        return flat if self.full else flat[self.indices]

    def scatter(self, real: torch.Tensor) -> torch.Tensor:
        """(nnz, ...) -> (B, T, ...), zeros at padding."""
        if self.full:
            return real.view(*self.shape, *real.shape[1:])
        padded = real.new_zeros(self.shape[0] * self.shape[1], *real.shape[1:])
        padded[self.indices] = real
        return padded.view(*self.shape, *real.shape[1:])


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


@functools.cache  # a failed import is not cached by Python: without this, every layer's call searches again
def _flash_varlen():
    """flash-attn's varlen kernel, or None where the package is not installed."""
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, real: RealTokens, dropout: float,
                     scale: float, kind: str) -> torch.Tensor:
    """Attention of each sequence over its own real tokens; q, k, v and the result are (nnz, heads, size)."""
    if kind == "flash_varlen":
        kernel = _flash_varlen()
        if kernel is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
            return kernel(q, k, v, real.cu_seqlens, real.cu_seqlens, real.max_len, real.max_len, dropout_p=dropout,
                          softmax_scale=scale, deterministic=torch.are_deterministic_algorithms_enabled())
        _warn_once("attention flash_varlen needs flash-attn, a GPU and bf16/fp16 here; using SDPA instead")
    # SDPA: full batches go maskless (flash kernel on GPU); padded ones through a padded copy and a key mask.
    def by_head(x):  # (nnz, heads, size) -> (B, heads, T, size)
        return real.scatter(x).transpose(1, 2)

    mask = None if real.full else real.key_mask
    out = F.scaled_dot_product_attention(by_head(q), by_head(k), by_head(v), attn_mask=mask, dropout_p=dropout,
                                         scale=scale)
    return real.gather(out.transpose(1, 2))


def _layer(layer, hidden: torch.Tensor, real: RealTokens, attention: str) -> torch.Tensor:
    """One HF BertLayer (its own modules and weights) over the real tokens."""
    self_attention = layer.attention.self
    shape = (-1, self_attention.num_attention_heads, self_attention.attention_head_size)
    q, k, v = (proj(hidden).view(shape) for proj in (self_attention.query, self_attention.key, self_attention.value))
    dropout = self_attention.dropout.p if layer.training else 0.0
    context = varlen_attention(q, k, v, real, dropout, self_attention.scaling, attention)
    attended = layer.attention.output(context.flatten(1), hidden)
    return layer.output(layer.intermediate(attended), attended)


def encode_unpadded(bert, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    token_type_ids: torch.Tensor | None = None,
                    attention: str = "sdpa") -> tuple[torch.Tensor, RealTokens]:
    """The last hidden states of the real tokens, (nnz, hidden), and where they sit in the batch.

    Positions are column indices, as in HF's padded forward, so the outputs are the same.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    real = RealTokens.of(attention_mask)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    hidden = bert.embeddings(input_ids=real.gather(input_ids)[None], token_type_ids=real.gather(token_type_ids)[None],
                             position_ids=real.gather(positions)[None])[0]
    for layer in bert.encoder.layer:
        hidden = _layer(layer, hidden, real, attention)
    return hidden, real


def _unpadded_forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                      inputs_embeds=None, **_):
    if inputs_embeds is not None or position_ids is not None:
        raise ValueError("bioray's unpadded encoder takes input_ids (and attention_mask, token_type_ids) only; "
                         "set fast.unpad: false to pass inputs_embeds or position_ids")
    hidden, real = encode_unpadded(self, input_ids, attention_mask, token_type_ids, self.bioray_attention)
    sequence = real.scatter(hidden)
    return BaseModelOutputWithPoolingAndCrossAttentions(
        last_hidden_state=sequence, pooler_output=self.pooler(sequence) if self.pooler is not None else None)


def use_unpadded_forward(bert, attention: str = "sdpa") -> None:
    """Give this BertModel instance the unpadded forward. The HF heads around it (token and sequence
    classification, QA) call `model.bert(...)` and get a padded last_hidden_state back (zeros at
    padding), so they work unchanged; parameters, state_dict and save_pretrained are untouched."""
    bert.bioray_attention = attention
    bert.forward = types.MethodType(_unpadded_forward, bert)


def compile_dense_blocks(bert) -> None:
    """torch.compile each layer's dense blocks in place (parameter names unchanged): bias+GELU and
    dropout+residual+LayerNorm each become one fused kernel. Attention stays on its own kernel."""
    for layer in bert.encoder.layer:
        for block in (layer.attention.output, layer.intermediate, layer.output):
            block.compile()

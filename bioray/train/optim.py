"""Optimizers, parameter groups and learning-rate schedules for pretraining and fine-tuning.

LAMB (You et al., 2019, "Large Batch Optimization for Deep Learning") is what large-batch BERT
pretraining uses. DeepSpeed's FusedLamb is CUDA-only and torch has no LAMB, so the CPU path uses
the small implementation below; on GPU, DeepSpeed's fused kernel is used when it builds.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """BERT's recipe: weight decay on every parameter but biases and LayerNorm weights."""
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if not n.endswith(NO_DECAY)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if n.endswith(NO_DECAY)], "weight_decay": 0.0}]


class Lamb(torch.optim.Optimizer):
    """Adam moments, decoupled weight decay, and a per-tensor trust ratio ||w|| / ||update||."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                m_hat = exp_avg / (1 - beta1 ** state["step"])
                v_hat = exp_avg_sq / (1 - beta2 ** state["step"])
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                weight_norm, update_norm = p.norm(), update.norm()
                trust = torch.where((weight_norm > 0) & (update_norm > 0), weight_norm / update_norm,
                                    torch.ones_like(weight_norm))
                p.add_(update, alpha=-group["lr"] * float(trust))
        return loss


def build_optimizer(name: str, groups: list[dict], lr: float, use_gpu: bool,
                    fused: bool = True) -> torch.optim.Optimizer:
    """AdamW (torch's fused kernel on CPU and GPU when `fused`, else its multi-tensor foreach form) or LAMB."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6, fused=fused, foreach=not fused)
    if use_gpu and fused:
        try:
            from deepspeed.ops.lamb import FusedLamb

            return FusedLamb(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6)
        except Exception as exc:  # the CUDA op could not be built here: same maths, unfused
            log.warning("DeepSpeed FusedLamb unavailable (%s); using bioray's LAMB", exc)
    return Lamb(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6)


def warmup_decay(warmup: int, total: int, power: float = 1.0, first: int = 1):
    """LR multiplier: linear warmup to 1, then polynomial decay (power 1 = linear) to 0 at `total`.
    The first step's multiplier is first/warmup: 1 (pretraining), or 0 as in Google's BERT and HF's
    Trainer (fine-tuning, where bioray is compared with them)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + first) / warmup
        return max(0.0, (total - step) / max(1, total - warmup)) ** power
    return factor

"""DeepSpeed engine construction from the typed pretraining config."""

from __future__ import annotations

import os

import torch

from bioray.config import PretrainConfig


def deepspeed_config(config: PretrainConfig) -> dict:
    """The DeepSpeed JSON config; the batch is split as global = workers x micro x accumulation."""
    return {
        "train_batch_size": config.global_batch_size,
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": config.grad_accum_steps,
        "gradient_clipping": config.grad_clip,
        "zero_optimization": {"stage": config.zero_stage},
        "bf16": {"enabled": config.precision == "bf16"},
        "steps_per_print": 10**9,  # bioray logs itself
        "wall_clock_breakdown": False,
    }


def linear_warmup_decay(warmup: int, total: int):
    """LR multiplier: linear warmup to 1, then linear decay to 0 at `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def build_engine(model: torch.nn.Module, config: PretrainConfig, use_gpu: bool):
    """DeepSpeed engine over an AdamW (fused on GPU) with warmup + linear decay.

    The torch.distributed group already exists (Ray Train made it: gloo on CPU, NCCL on GPU);
    DeepSpeed attaches to it.
    """
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999), eps=1e-6, fused=use_gpu)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(config.warmup_steps, config.steps))
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(config))
    return engine, scheduler

"""DeepSpeed engine construction from the typed pretraining config."""

from __future__ import annotations

import logging
import os

import torch

from bioray.config import PretrainConfig, TrainingConfig
from bioray.train.optim import build_optimizer, decay_groups, warmup_decay

log = logging.getLogger(__name__)


def deepspeed_config(config: PretrainConfig, world: int | None = None, load_universal: bool = False) -> dict:
    """The DeepSpeed JSON config; the batch is split as global = workers x micro x accumulation, with `world`
    workers (default num_workers: fewer after an elastic continuation). With `load_universal`, the checkpoint
    to load is in DeepSpeed's universal format (bioray.train.elastic: one written on another number of workers)."""
    world = world or config.num_workers
    settings = {
        "train_batch_size": config.global_batch_size,
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": config.global_batch_size // (world * config.micro_batch_size),
        "gradient_clipping": config.grad_clip,
        "zero_optimization": {"stage": config.effective_zero_stage},
        "bf16": {"enabled": config.precision == "bf16"},
        "steps_per_print": 10**9,  # bioray logs itself
        "wall_clock_breakdown": False,
    }
    if load_universal:
        settings["checkpoint"] = {"load_universal": True}
    return settings


def build_engine(model: torch.nn.Module, config: PretrainConfig, use_gpu: bool, world: int | None = None,
                 load_universal: bool = False):
    """DeepSpeed engine over AdamW or LAMB (fused per config.fast), with warmup then linear/polynomial decay.

    The torch.distributed group already exists (Ray Train made it: gloo on CPU, NCCL on GPU);
    DeepSpeed attaches to it.
    """
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    if config.effective_zero_stage != config.zero_stage:
        log.info("ZeRO-2 runs as ZeRO-1: with gradient accumulation, fast.reduce_once_per_step all-reduces "
                 "gradients once per optimizer step (ZeRO-2 would reduce-scatter every micro-batch)")
    optimizer = build_optimizer(config.optimizer, decay_groups(model, config.weight_decay), config.lr, use_gpu,
                                config.fast.fused_optimizer)
    schedule = warmup_decay(config.warmup_steps, config.steps, config.decay_power)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                           config=deepspeed_config(config, world, load_universal))
    return engine, scheduler


def finetune_engine(model: torch.nn.Module, optimizer, scheduler, config: TrainingConfig, world_size: int):
    """A DeepSpeed engine for fine-tuning at config.zero_stage over the caller's optimizer and schedule.
    The batch, clipping and precision are those of the DDP path (bf16 stays autocast with fp32 weights,
    so both paths compute the same thing): config.batch_size is the global batch, each worker gets its
    rows of it (the batch keys below are DeepSpeed's bookkeeping: bioray feeds the engine itself)."""
    if not config.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config={
        "train_batch_size": -(-config.batch_size // world_size) * world_size,
        "train_micro_batch_size_per_gpu": -(-config.batch_size // world_size),
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": config.zero_stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    })
    return engine

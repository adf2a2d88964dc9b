"""Pretrain stage: MLM on the packed token shards with Ray Train (TorchTrainer) + DeepSpeed ZeRO."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from transformers import AutoTokenizer

from bioray.config import PretrainConfig
from bioray.data.masking import mask_batch
from bioray.model.encoder import build_mlm_model, masked_lm_loss
from bioray.tracking import WorkerLogger
from bioray.train.deepspeed import build_engine, deepspeed_config
from bioray.train.throughput import Throughput, format_eta

log = logging.getLogger(__name__)


def _export(engine, tokenizer, directory: Path, zero_stage: int) -> None:
    """HF export (safetensors + config + tokenizer) that AutoModelForMaskedLM.from_pretrained loads."""
    state = engine._zero3_consolidated_16bit_state_dict() if zero_stage == 3 else None  # every rank takes part
    if ray.train.get_context().get_world_rank() == 0:
        engine.module.save_pretrained(str(directory), state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(str(directory))


def train_loop(loop_config: dict) -> None:
    """Runs on every Ray Train worker."""
    config = PretrainConfig.model_validate(loop_config["pretrain"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(loop_config["tokenizer_dir"])
    init = Path(loop_config["init_checkpoint"]) if loop_config.get("init_checkpoint") else None
    model = build_mlm_model(config.model, len(tokenizer), tokenizer.pad_token_id, init)
    device = ray.train.torch.get_device()
    model.to(device)
    engine, scheduler = build_engine(model, config, config.use_gpu)

    logger = WorkerLogger(loop_config["tracking_uri"], loop_config["run_id"]) if rank == 0 else None
    generator = torch.Generator().manual_seed(config.seed * 1000 + rank)
    special = list(tokenizer.all_special_ids)

    def collate(batch):
        return mask_batch(batch, config.mask_rate, tokenizer.mask_token_id, len(tokenizer), special, generator)

    shard = ray.train.get_dataset_shard("train")
    meter = Throughput(config.steps)
    history, accum = [], config.grad_accum_steps
    window = torch.zeros(4, dtype=torch.float64)  # loss sum, correct, masked, micro-batches
    micro, epoch = 0, 0
    while engine.global_steps < config.steps:
        for batch in shard.iter_torch_batches(batch_size=config.micro_batch_size, collate_fn=collate, drop_last=True,
                                              local_shuffle_buffer_size=config.shuffle_buffer,
                                              local_shuffle_seed=config.seed + epoch):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            loss, correct, masked = masked_lm_loss(engine.module, batch)
            engine.backward(loss)
            engine.step()
            micro += 1
            window += torch.tensor([loss.item(), correct.item(), masked.item(), 1.0], dtype=torch.float64)
            meter.add(int(batch["attention_mask"].sum()), batch["input_ids"].shape[0])
            if micro % accum:
                continue
            step = engine.global_steps
            if step % config.log_every == 0 or step == config.steps:
                metrics = _window_metrics(engine, scheduler, window, meter, step, world)
                window.zero_()
                if rank == 0:
                    history.append({"step": step, **metrics})
                    logger.log(metrics, step)
                    log.info("pretrain step %d/%d loss %.4f acc %.3f | %.0f tok/s | ETA %s", step, config.steps,
                             metrics["pretrain/loss"], metrics["pretrain/mlm_accuracy"],
                             metrics["pretrain/tokens_per_s"], format_eta(metrics["pretrain/eta_s"]))
                ray.train.report({k.split("/")[-1]: v for k, v in metrics.items()})
            if step >= config.steps:
                break
        epoch += 1

    output = Path(loop_config["output_dir"])
    _export(engine, tokenizer, output / "model", config.zero_stage)
    with tempfile.TemporaryDirectory() as tmp:
        engine.save_checkpoint(tmp, tag="final", client_state={"step": engine.global_steps, "epochs": epoch})
        if rank == 0:
            (output / "history.json").write_text(json.dumps(history))
        ray.train.report({"step": engine.global_steps}, checkpoint=Checkpoint.from_directory(tmp))


def _window_metrics(engine, scheduler, window: torch.Tensor, meter: Throughput, step: int, world: int) -> dict:
    """Metrics averaged over the logging window and over all workers (one all-reduce)."""
    totals = window.clone()
    rates = meter.window(step)
    throughput = torch.tensor([rates["tokens_per_s"], rates["sequences_per_s"]], dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(totals)
        dist.all_reduce(throughput)  # summed: every worker's tokens/s adds up
    grad_norm = engine.get_global_grad_norm()
    return {
        "pretrain/loss": float(totals[0] / max(totals[3], 1)),
        "pretrain/mlm_accuracy": float(totals[1] / max(totals[2], 1)),
        "pretrain/lr": float(scheduler.get_last_lr()[0]),
        "pretrain/grad_norm": float(grad_norm) if grad_norm is not None else 0.0,
        "pretrain/tokens_per_s": float(throughput[0]),
        "pretrain/sequences_per_s": float(throughput[1]),
        "pretrain/eta_s": rates["eta_s"],
    }


def run_pretrain(config: PretrainConfig, *, sequences_dir: Path, tokenizer_dir: Path, output: Path, storage: str,
                 run_name: str, tracking_uri: str, run_id: str, init_checkpoint: Path | None) -> dict:
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"pretrain": config.model_dump(), "tokenizer_dir": str(tokenizer_dir),
                           "output_dir": str(output), "tracking_uri": tracking_uri, "run_id": run_id,
                           "init_checkpoint": str(init_checkpoint) if init_checkpoint else None},
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu),
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
        run_config=RunConfig(name=run_name, storage_path=storage),
        datasets={"train": ray.data.read_parquet(str(sequences_dir),
                                                 columns=["input_ids", "token_type_ids", "word_start", "length"])},
    )
    result = trainer.fit()
    (output / "deepspeed_config.json").write_text(json.dumps(deepspeed_config(config), indent=2))
    history = json.loads((output / "history.json").read_text())
    last = history[-1] if history else {}
    return {
        "pretrain/final_loss": last.get("pretrain/loss", float("nan")),
        "pretrain/final_mlm_accuracy": last.get("pretrain/mlm_accuracy", float("nan")),
        "pretrain/steps": last.get("step", 0),
        "checkpoint_path": result.checkpoint.path if result.checkpoint else "",
    }

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
from mlflow.tracking import MlflowClient
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    RunConfig,
    ScalingConfig,
    UserCallback,
)
from ray.train.torch import TorchConfig, TorchTrainer
from transformers import AutoTokenizer

from bioray.config import PretrainConfig
from bioray.data.masking import mask_batch
from bioray.model.encoder import build_mlm_model, masked_lm_loss
from bioray.tracking import WorkerLogger, log_metrics
from bioray.train.deepspeed import build_engine, deepspeed_config
from bioray.train.flops import device_peak_flops, flops_per_token
from bioray.train.throughput import Throughput, format_eta

log = logging.getLogger(__name__)


def _export(engine, tokenizer, directory: Path, zero_stage: int) -> None:
    """HF export (safetensors + config + tokenizer) that AutoModelForMaskedLM.from_pretrained loads."""
    state = engine._zero3_consolidated_16bit_state_dict() if zero_stage == 3 else None  # every rank takes part
    if ray.train.get_context().get_world_rank() == 0:
        engine.module.save_pretrained(str(directory), state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(str(directory))


def _batch_generator(seed: int, rank: int, epoch: int, index: int) -> torch.Generator:
    """The masking RNG of one micro-batch: a function of its place in the data stream only, so a
    resumed run masks every sequence exactly as the uninterrupted run would."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + rank) * 1_000_003 + epoch) * 1_000_003 + index)


def _save_checkpoint(engine, rank: int, position: dict, history: list, metrics: dict) -> None:
    """Every rank writes its DeepSpeed shard and its own RNG state; Ray Train merges the ranks' files
    into one checkpoint directory in storage (and keeps the last K)."""
    with tempfile.TemporaryDirectory() as tmp:
        engine.save_checkpoint(tmp, tag="state", client_state={"position": position, "history": history})
        torch.save({"torch": torch.get_rng_state()}, Path(tmp) / f"rng_rank{rank}.pt")
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))


def _restore(engine, rank: int) -> tuple[dict, list]:
    """Model, optimizer, scheduler, step, data position and RNG from the latest checkpoint, if any."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return {"epoch": 0, "micro": 0, "attempt": 0}, []
    with checkpoint.as_directory() as directory:
        _, client_state = engine.load_checkpoint(directory, tag="state", load_module_strict=True)
        rng = torch.load(Path(directory) / f"rng_rank{rank}.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    position = {**client_state["position"], "attempt": client_state["position"]["attempt"] + 1}
    log.info("rank %d resumed at step %d (epoch %d, micro-batch %d), attempt %d", rank, engine.global_steps,
             position["epoch"], position["micro"], position["attempt"])
    return position, client_state["history"]


def train_loop(loop_config: dict) -> None:
    """Runs on every Ray Train worker."""
    config = PretrainConfig.model_validate(loop_config["pretrain"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(config.seed * 1000 + rank)
    tokenizer = AutoTokenizer.from_pretrained(loop_config["tokenizer_dir"])
    init = Path(loop_config["init_checkpoint"]) if loop_config.get("init_checkpoint") else None
    model = build_mlm_model(config.model, len(tokenizer), tokenizer.pad_token_id, init)
    device = ray.train.torch.get_device()
    model.to(device)
    engine, scheduler = build_engine(model, config, config.use_gpu)
    position, history = _restore(engine, rank)

    logger = WorkerLogger(loop_config["tracking_uri"], loop_config["run_id"]) if rank == 0 else None
    special = list(tokenizer.all_special_ids)
    shard = ray.train.get_dataset_shard("train")
    meter = Throughput(config.steps, start_step=engine.global_steps)
    peak = device_peak_flops()
    per_token = flops_per_token(sum(p.numel() for p in model.parameters()), model.config.num_hidden_layers,
                                model.config.hidden_size, loop_config["seq_len"])
    accum = config.grad_accum_steps
    window = torch.zeros(4, dtype=torch.float64)  # loss sum, correct, masked, micro-batches
    epoch, skip = position["epoch"], position["micro"]
    while engine.global_steps < config.steps:
        counter = iter(range(1 << 62))

        def collate(batch, epoch=epoch, counter=counter):  # called once per micro-batch, in stream order
            generator = _batch_generator(config.seed, rank, epoch, next(counter))
            return mask_batch(batch, config.mask_rate, tokenizer.mask_token_id, len(tokenizer), special, generator,
                              config.whole_word_masking)

        batches = shard.iter_torch_batches(batch_size=config.micro_batch_size, collate_fn=collate, drop_last=True,
                                           local_shuffle_buffer_size=config.shuffle_buffer,
                                           local_shuffle_seed=config.seed + epoch)
        for micro, batch in enumerate(batches, start=1):
            if micro <= skip:  # trained before the restart: the stream repeats itself, so skip exactly these
                continue
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            loss, correct, masked = masked_lm_loss(engine.module, batch)
            engine.backward(loss)
            engine.step()
            window += torch.tensor([loss.item(), correct.item(), masked.item(), 1.0], dtype=torch.float64)
            meter.add(int(batch["attention_mask"].sum()), batch["input_ids"].shape[0])
            if micro % accum:
                continue
            step = engine.global_steps
            metrics = None
            if step % config.log_every == 0 or step == config.steps:
                metrics = _window_metrics(engine, scheduler, window, meter, step, world)
                window.zero_()
                if peak:  # on GPU: real-token FLOPs over the peak of all workers' devices
                    metrics["pretrain/mfu"] = metrics["pretrain/tokens_per_s"] * per_token / (peak * world)
                if rank == 0:
                    history.append({"step": step, "attempt": position["attempt"], **metrics})
                    logger.log(metrics, step)
                    log.info("pretrain step %d/%d loss %.4f acc %.3f | %.0f tok/s | ETA %s", step, config.steps,
                             metrics["pretrain/loss"], metrics["pretrain/mlm_accuracy"],
                             metrics["pretrain/tokens_per_s"], format_eta(metrics["pretrain/eta_s"]))
            reported = {"step": step, **{k.split("/")[-1]: v for k, v in (metrics or {}).items()}}
            if step % config.checkpoint_every == 0 or step == config.steps:
                _save_checkpoint(engine, rank, {"epoch": epoch, "micro": micro, "attempt": position["attempt"]},
                                 history, reported)
            elif metrics is not None:
                ray.train.report(reported)
            if step >= config.steps:
                break
        epoch, skip = epoch + 1, 0

    output = Path(loop_config["output_dir"])
    _export(engine, tokenizer, output / "model", config.zero_stage)
    if rank == 0:
        (output / "history.json").write_text(json.dumps(history))


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


def _sequence_length(sequences_dir: Path) -> int:
    """Positions per packed sequence, from the shards' schema."""
    import pyarrow.dataset as pads

    return pads.dataset(str(sequences_dir), format="parquet").schema.field("input_ids").type.list_size


class CheckpointTracker(UserCallback):
    """On the Ray Train controller: records every persisted checkpoint in the stage's MLflow run
    (step, storage URI, size, the metrics reported with it) as `checkpoints/step-<n>.json`."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.tracking_uri, self.run_id = tracking_uri, run_id

    def after_report(self, run_context, metrics: list[dict], checkpoint: Checkpoint | None) -> None:
        if checkpoint is None:
            return
        from pyarrow.fs import FileSelector

        files = checkpoint.filesystem.get_file_info(FileSelector(checkpoint.path, recursive=True))
        step = int(metrics[0].get("step", 0))
        record = {"step": step, "uri": checkpoint.path, "size_bytes": sum(f.size or 0 for f in files),
                  "metrics": metrics[0]}
        client = MlflowClient(self.tracking_uri)
        client.log_dict(self.run_id, record, f"checkpoints/step-{step:08d}.json")
        log_metrics(client, self.run_id, {"pretrain/checkpoint_size_mb": record["size_bytes"] / 1e6}, step)


def run_pretrain(config: PretrainConfig, *, sequences_dir: Path, tokenizer_dir: Path, output: Path, storage: str,
                 run_name: str, tracking_uri: str, run_id: str, init_checkpoint: Path | None) -> dict:
    """Train, resuming from the last checkpoint of an earlier attempt with the same run name (Ray
    Train restores a run from its storage path and name) and after worker failures (FailureConfig)."""
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"pretrain": config.model_dump(), "tokenizer_dir": str(tokenizer_dir),
                           "output_dir": str(output), "tracking_uri": tracking_uri, "run_id": run_id,
                           "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
                           "seq_len": _sequence_length(sequences_dir)},
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu),
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
        run_config=RunConfig(name=run_name, storage_path=storage,
                             checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
                             failure_config=FailureConfig(max_failures=config.max_failures),
                             callbacks=[CheckpointTracker(tracking_uri, run_id)]),
        datasets={"train": ray.data.read_parquet(str(sequences_dir)).select_columns(
            ["input_ids", "token_type_ids", "word_start", "length"])},
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

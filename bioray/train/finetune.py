"""Fine-tuning: a task's head on the pretrained encoder (token classification, sequence classification
or regression, extractive QA), trained data-parallel on a long-lived worker group
(bioray.train.worker_group: DDP over gloo/NCCL, or a DeepSpeed ZeRO engine: finetune.zero_stage).

The worker count changes the speed, not the model: `batch_size` is the global batch, every worker
draws the same global batches and trains on its rows of each, and the loss is the mean over the
global batch's loss terms (labelled tokens or examples), not a mean of the workers' means.

The task type arrives as an object (bioray.tasks.base.Task): this module runs any task's encode,
collate, predict and score without knowing which it is. The examples arrive read (once, by the stage).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bioray import progress
from bioray.config import TrainingConfig
from bioray.metric_names import FINETUNE_STARTUP, FINETUNE_TRAIN_SECONDS, best_dev
from bioray.tracking.context import RunContext
from bioray.train.determinism import use_deterministic_kernels
from bioray.train.optim import decay_groups, warmup_decay

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneJob:
    """What the stage hands every worker of its group."""

    config: TrainingConfig
    task: object  # a bioray.tasks.base.Task
    seed: int
    labels: list[str]
    train: list
    dev: list
    encoder_dir: Path
    output_dir: Path
    context: RunContext
    ready_at: float  # time.time() when the stage's inputs were ready: start-up is measured from here
    progress_file: Path | None = None

    def run(self, rank: int, world: int, device: str) -> dict | None:
        """What a worker of the group runs (bioray.train.worker_group)."""
        return run_job(self, rank, world, device)


# What a fine-tuning job imports, imported by each worker of its group once, before its first job
WORKER_IMPORTS = ("transformers", "bioray.model.encoder", "bioray.tracking.outbox", "bioray.train.finetune")


def _batches(features: list, batch_size: int, rng: random.Random) -> list[list]:
    """Random batches, as HF's Trainer draws them. Length-bucketed batches (sorted within chunks of 50)
    trained faster but worse: −0.5 to −3 F1 against the Trainer in every comparison, as each batch's mean
    loss then weighs short sentences' labels more; the unpadded encoder keeps padding cheap anyway."""
    order = list(range(len(features)))
    rng.shuffle(order)
    return [[features[i] for i in order[j:j + batch_size]] for j in range(0, len(order), batch_size)]


def _zero_loss(outputs) -> torch.Tensor:
    """A loss of 0 that still reaches every output (so every parameter gets a gradient, of zero)."""
    return sum(v.float().sum() for k, v in outputs.items() if k != "loss" and torch.is_tensor(v)) * 0.0


def train_epochs(model, task, features: list, config: TrainingConfig, rng: random.Random, device,
                 pad_id: int, after_epoch=None, *, rank: int = 0, world: int = 1, on_step=None,
                 on_first_step=None, should_stop=None) -> dict:
    """AdamW with warmup then linear decay over random, dynamically padded global batches of
    config.batch_size; each rank trains on its rows of every batch (rows rank, rank + world, ...; `rng`
    must draw the same order on every rank). With config.zero_stage set, a DeepSpeed engine does the
    backward, clipping and step. on_step(step, loss): each step's global mean loss, told at the end of
    its epoch (one reduction an epoch, not a sync a step); on_first_step(): after the first step.
    should_stop(): asked on rank 0 after each epoch's after_epoch; every rank stops when it says so.
    Returns the last epoch's metrics (from after_epoch when given)."""
    steps_per_epoch = -(-len(features) // config.batch_size)
    total = steps_per_epoch * config.epochs
    # fused: one kernel for all parameters, on CPU and GPU (docs/performance.md, Measured choices)
    fused = config.fast.fused_optimizer
    optimizer = torch.optim.AdamW(decay_groups(model, 0.01), lr=config.lr, fused=fused, foreach=not fused)
    device_type = torch.device(device).type
    # bf16: autocast, weights and optimizer state stay fp32
    precision = torch.autocast(device_type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    # warmup as in HF's Trainer and Google's BERT: rounded up, the first step at lr 0 (the parity bench compares)
    warmup = math.ceil(total * config.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_decay(warmup, total, first=0))
    engine = None  # with ZeRO: forward, backward and step go through the DeepSpeed engine
    if config.zero_stage is not None:
        from bioray.train.deepspeed import finetune_engine

        engine = finetune_engine(model, optimizer, scheduler, config, world)
    step, metrics = 0, {}
    for epoch in range(config.epochs):
        model.train()
        shares = []  # this rank's share of each step's global mean loss
        for batch in _batches(features, config.batch_size, rng):
            rows = batch[rank::world]
            # a rank without rows (a last batch smaller than the group) runs a stand-in row that adds
            # nothing: the gradient reduction waits for every rank
            inputs = task.collate(rows or batch[:1], pad_id)  # padded to its own rows' longest
            own_terms = task.loss_terms(inputs) if rows else 0
            terms = task.loss_terms(task.collate(batch, pad_id)) if world > 1 else own_terms  # the global mean's
            with precision:
                outputs = (model if engine is None else engine)(**{k: v.to(device) for k, v in inputs.items()})
            # this rank's share of the global mean; times world, as DDP and DeepSpeed average the ranks' gradients
            share = outputs.loss * (own_terms / terms) if own_terms else _zero_loss(outputs)
            if engine is not None:
                engine.backward(share * world)
                engine.step()  # clips, steps the optimizer and the schedule, zeroes the gradients
            else:
                (share * world).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            shares.append(share.detach().float())
            step += 1
            if step == 1 and on_first_step is not None:
                on_first_step()
        losses = torch.stack(shares)
        if world > 1:
            torch.distributed.all_reduce(losses)
        losses = losses.tolist()
        for i, loss in enumerate(losses):
            if on_step is not None:
                on_step(step - len(losses) + i + 1, loss)
        train_loss = sum(losses) / max(1, len(losses))
        metrics = after_epoch(epoch, step, train_loss) if after_epoch else {"finetune/train_loss": train_loss}
        if should_stop is not None and _agreed(rank == 0 and should_stop(), world, device):
            break
    return metrics


def _agreed(stop: bool, world: int, device) -> bool:
    """Rank 0's decision, on every rank (one broadcast an epoch; on the training device, as NCCL needs)."""
    if world == 1:
        return stop
    flag = torch.tensor([1 if stop else 0], device=device)
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def run_job(job: FinetuneJob, rank: int, world: int, device: str) -> dict | None:
    """One fine-tune on one rank of a worker group (torch.distributed is up); rank 0 scores dev after
    each epoch, keeps the dev-best weights and writes the model; returns rank 0's metrics."""
    from transformers import AutoTokenizer  # here, not at the top: the stage's own process never needs it

    from bioray.model.encoder import apply_fast_path
    from bioray.tracking.outbox import SPILL_FILE, WorkerLogger

    config = job.config
    progress.use(job.progress_file)
    use_deterministic_kernels(config.deterministic)
    torch.manual_seed(job.seed)  # the head's initial weights: the same on every rank
    tokenizer = AutoTokenizer.from_pretrained(str(job.encoder_dir))
    task, labels, dev = job.task, job.labels, job.dev
    model = apply_fast_path(task.build_model(str(job.encoder_dir), labels), **config.fast.model_switches()).to(device)
    torch.manual_seed(job.seed * 1000 + rank)  # dropout: each rank its own masks, from the run's seed
    if config.zero_stage is None and world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if config.use_gpu else None)
    core = model.module if hasattr(model, "module") else model

    features = task.encode(job.train, tokenizer, labels, config.max_length)  # all of them: global batches
    logger = WorkerLogger(job.context, job.output_dir / SPILL_FILE) if rank == 0 else None
    primary = task.metric
    # rank 0: the epoch best on dev, its weights on the host; every rank: the epochs trained so far
    best = {"score": None, "epoch": 0, "state": None, "trained": 0}
    started = {}

    def on_first_step() -> None:
        started["startup_s"] = time.time() - job.ready_at

    def on_step(step: int, loss: float) -> None:
        if logger is not None:
            logger.log({"finetune/loss": loss}, step)

    def after_epoch(epoch: int, step: int, train_loss: float) -> dict:
        best["trained"] = epoch + 1
        metrics = {"finetune/train_loss": train_loss, "finetune/epoch": epoch + 1}
        if rank == 0:
            if dev:
                predicted = task.predict(core, tokenizer, dev, labels, config.max_length, 64, device)
                score = task.score(dev, predicted, labels)[primary]
                metrics[f"finetune/dev_{primary}"] = score
                if best["score"] is None or score > best["score"]:
                    best.update(score=score, epoch=epoch + 1,
                                state={k: v.detach().to("cpu", copy=True) for k, v in core.state_dict().items()})
            logger.log(metrics, step)
            dev_score = metrics.get(f"finetune/dev_{primary}", float("nan"))
            progress.report(log, "epoch %d/%d loss %.4f dev %s %.4f", epoch + 1, config.epochs, train_loss, primary,
                            dev_score)
        return metrics

    def plateaued() -> bool:
        """No dev improvement for `patience` epochs: the fine-tune has converged (as far as dev can tell)."""
        return bool(config.patience and dev and best["trained"] - best["epoch"] >= config.patience)

    training = time.perf_counter()
    metrics = train_epochs(model, task, features, config, random.Random(job.seed), device, tokenizer.pad_token_id,
                           after_epoch, rank=rank, world=world, on_step=on_step, on_first_step=on_first_step,
                           should_stop=plateaued)
    if rank != 0:
        return None
    seconds = time.perf_counter() - training
    output = job.output_dir
    if best["state"] is not None:  # BioBERT/BLURB practice: the test set sees the dev-best epoch only
        core.load_state_dict(best["state"])
        metrics.update({"finetune/best_epoch": best["epoch"], best_dev(primary): best["score"]})
    metrics["finetune/lr"] = config.lr
    metrics["finetune/epochs_trained"] = best["trained"]
    if config.patience and dev:  # 1: it stopped because dev stopped improving, 0: it hit the cap first
        metrics["finetune/plateau"] = int(plateaued())
    core.save_pretrained(str(output / "model"), safe_serialization=True)
    tokenizer.save_pretrained(str(output / "model"))
    (output / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
    logger.close()
    # timings go to MLflow with the stage's metrics, not into its output (whose digest they would change)
    return {**metrics, FINETUNE_TRAIN_SECONDS: seconds, **({FINETUNE_STARTUP: started["startup_s"]} if started else {})}


def scaling(config: TrainingConfig):
    """The worker group a fine-tune of these settings runs on (a bioray.train.worker_group.Scaling)."""
    from bioray.train.worker_group import Scaling

    return Scaling(config.num_workers, config.use_gpu, WORKER_IMPORTS)


def run_finetune(config: TrainingConfig, task, splits: dict[str, list], labels: list[str], seed: int, *,
                 encoder_dir: Path, output: Path, context: RunContext, progress_file: Path | None = None,
                 group=None, ready_at: float | None = None) -> dict:
    """Fine-tune on splits["train"] (scored on splits["dev"] after each epoch, when there is one) on
    `group` (a bioray.train.worker_group.WorkerGroup of config's scaling; without one, a group made
    for this run and shut down after it); the model, its labels and the metrics go to output."""
    from bioray.train.worker_group import WorkerGroup

    job = FinetuneJob(config, task, seed, labels, splits["train"], splits.get("dev", []), Path(encoder_dir),
                      Path(output), context, ready_at or time.time(), progress_file)
    own = group is None
    group = group or WorkerGroup(scaling(config))
    try:
        metrics = group.run(job)
    finally:
        if own:
            group.shutdown()
    (output / "labels.json").write_text(json.dumps(labels))
    return metrics

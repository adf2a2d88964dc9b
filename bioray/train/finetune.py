"""Fine-tuning: a task's head on the pretrained encoder (token classification, sequence classification
or regression, extractive QA), trained with Ray Train (DDP over gloo/NCCL, or a DeepSpeed ZeRO engine:
finetune.zero_stage).

The task type arrives as an object (bioray.tasks.base.Task): this module runs any task's encode,
collate, predict and score without knowing which it is. The examples arrive read (once, by the stage).
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path

import ray.train
import torch
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from transformers import AutoTokenizer

from bioray import progress
from bioray.config import TrainingConfig
from bioray.metric_names import best_dev
from bioray.model.encoder import apply_fast_path
from bioray.tracking.context import RunContext
from bioray.tracking.outbox import SPILL_FILE, WorkerLogger
from bioray.train.determinism import use_deterministic_kernels
from bioray.train.optim import decay_groups, warmup_decay

log = logging.getLogger(__name__)


def _batches(features: list, batch_size: int, rng: random.Random) -> list[list]:
    """Random batches, as HF's Trainer draws them. Length-bucketed batches (sorted within chunks of 50)
    trained faster but worse: −0.5 to −3 F1 against the Trainer in every comparison, as each batch's mean
    loss then weighs short sentences' labels more; the unpadded encoder keeps padding cheap anyway."""
    order = list(range(len(features)))
    rng.shuffle(order)
    return [[features[i] for i in order[j:j + batch_size]] for j in range(0, len(order), batch_size)]


def train_epochs(model, task, features: list, config: TrainingConfig, rng: random.Random, device,
                 pad_id: int, after_epoch=None) -> dict:
    """AdamW with warmup then linear decay over random, dynamically padded batches; the
    loop every Ray Train worker runs (and `bioray bench finetune` times). With config.zero_stage set,
    a DeepSpeed engine does the backward, clipping and step (torch.distributed must be up). Returns
    the last epoch's metrics (from after_epoch when given)."""
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

        engine = finetune_engine(model, optimizer, scheduler, config, torch.distributed.get_world_size())
    step, metrics = 0, {}
    for epoch in range(config.epochs):
        model.train()
        batches = _batches(features, config.batch_size, rng)
        loss_sum = 0.0
        for batch in batches:
            inputs = {k: v.to(device) for k, v in task.collate(batch, pad_id).items()}
            with precision:
                loss = (model if engine is None else engine)(**inputs).loss
            if engine is not None:
                engine.backward(loss)
                engine.step()  # clips, steps the optimizer and the schedule, zeroes the gradients
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.item()
            step += 1
        train_loss = loss_sum / max(1, len(batches))
        metrics = after_epoch(epoch, step, train_loss) if after_epoch else {"finetune/train_loss": train_loss}
    return metrics


def train_loop(loop_config: dict) -> None:
    """Runs on every Ray Train worker."""
    config: TrainingConfig = loop_config["finetune"]
    progress.use(loop_config.get("progress_file"))
    task, seed, labels = loop_config["task"], loop_config["seed"], loop_config["labels"]
    context: RunContext = loop_config["context"]
    ray_context = ray.train.get_context()
    rank, world = ray_context.get_world_rank(), ray_context.get_world_size()
    use_deterministic_kernels(config.deterministic)
    torch.manual_seed(seed)
    dev = loop_config["dev"]
    tokenizer = AutoTokenizer.from_pretrained(loop_config["encoder_dir"])
    model = apply_fast_path(task.build_model(loop_config["encoder_dir"], labels), **config.fast.model_switches())
    device = ray.train.torch.get_device()
    if config.zero_stage is None:
        model = ray.train.torch.prepare_model(model)  # DDP
    else:
        model = model.to(device)  # train_epochs wraps it in a DeepSpeed engine
    core = model.module if hasattr(model, "module") else model

    features = task.encode(loop_config["train"], tokenizer, labels, config.max_length)
    # Each worker its own slice, all of the same length: DDP needs the same number of steps everywhere.
    features = features[rank::world][: len(features) // world]
    logger = WorkerLogger(context, Path(loop_config["output_dir"]) / SPILL_FILE) if rank == 0 else None
    primary = task.metric
    best = {"score": None, "epoch": 0, "state": None}  # rank 0: the epoch best on dev, its weights on the host

    def after_epoch(epoch: int, step: int, train_loss: float) -> dict:
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
        ray.train.report({k.split("/")[-1]: v for k, v in metrics.items()})
        return metrics

    metrics = train_epochs(model, task, features, config, random.Random(seed), device, tokenizer.pad_token_id,
                           after_epoch)

    if rank == 0:
        output = Path(loop_config["output_dir"])
        if best["state"] is not None:  # BioBERT/BLURB practice: the test set sees the dev-best epoch only
            core.load_state_dict(best["state"])
            metrics.update({"finetune/best_epoch": best["epoch"], best_dev(primary): best["score"]})
        metrics["finetune/lr"] = config.lr
        core.save_pretrained(str(output / "model"), safe_serialization=True)
        tokenizer.save_pretrained(str(output / "model"))
        (output / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
        logger.close()


def run_finetune(config: TrainingConfig, task, splits: dict[str, list], labels: list[str], seed: int, *,
                 encoder_dir: Path, output: Path, storage: str, run_name: str, context: RunContext,
                 progress_file: Path | None = None) -> dict:
    """Fine-tune on splits["train"] (scored on splits["dev"] after each epoch, when there is one);
    the model, its labels and the last epoch's metrics go to output."""
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"finetune": config, "task": task, "seed": seed, "labels": labels,
                           "train": splits["train"], "dev": splits.get("dev", []), "encoder_dir": str(encoder_dir),
                           "output_dir": str(output), "context": context, "progress_file": progress_file},
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu),
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
        run_config=RunConfig(name=run_name, storage_path=storage),
    )
    trainer.fit()
    (output / "labels.json").write_text(json.dumps(labels))
    return json.loads((output / "train_metrics.json").read_text())  # rank 0's last epoch

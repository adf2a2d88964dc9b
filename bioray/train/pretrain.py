"""Pretrain stage: MLM on the packed token shards with Ray Train (TorchTrainer) + DeepSpeed ZeRO."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import ray.train
import torch
import torch.distributed as dist
from ray.data.collate_fn import NumpyBatchCollateFn
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    ControllerError,
    DataConfig,
    FailureConfig,
    RunConfig,
    ScalingConfig,
    UserCallback,
)
from ray.train.torch import TorchConfig, TorchTrainer
from transformers import AutoTokenizer

from bioray import progress
from bioray.config import PretrainConfig
from bioray.data.masking import mask_batch, stack_column
from bioray.data.streaming import IN_FLIGHT_BYTES, parquet_dataset, read_shards
from bioray.model.encoder import (
    STATS,
    apply_fast_path,
    build_mlm_model,
    pretraining_loss,
)
from bioray.storage import check_storage, storage_uri, train_storage
from bioray.tracking.context import RunContext
from bioray.tracking.outbox import SPILL_FILE, WorkerLogger, metrics_item, record_item, send_or_spill
from bioray.train import failfast
from bioray.train.deepspeed import build_engine, deepspeed_config
from bioray.train.determinism import use_deterministic_kernels
from bioray.train.elastic import DataTrace, needs_universal, resumed_skip, scaling_workers, to_universal, write_world
from bioray.train.flops import device_peak_flops, flops_per_token, mlm_parameters
from bioray.train.preemption import STOP, Preempted, PreemptionCheck
from bioray.train.throughput import Throughput, format_eta

log = logging.getLogger(__name__)


def _export(engine, tokenizer, directory: Path, zero_stage: int) -> None:
    """HF export (safetensors + config + tokenizer) that AutoModelForMaskedLM.from_pretrained loads."""
    state = engine._zero3_consolidated_16bit_state_dict() if zero_stage == 3 else None  # every rank takes part
    if ray.train.get_context().get_world_rank() == 0:
        engine.module.save_pretrained(str(directory), state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(str(directory))


class MaskingCollate(NumpyBatchCollateFn):
    """Dynamic masking as the collate step of `iter_torch_batches`.

    The masking RNG of a micro-batch is seeded from its content (and the seed, rank and epoch), not
    from a call counter: a resumed run masks every sequence exactly as the uninterrupted run did,
    whatever order Ray's prefetch threads collate in, and the same sequences get new masks each epoch.
    """

    def __init__(self, config: PretrainConfig, mask_id: int, vocab_size: int, special_ids: list[int], rank: int,
                 epoch: int):
        self.config, self.mask_id, self.vocab_size, self.special_ids = config, mask_id, vocab_size, special_ids
        self.salt = f"{config.seed}:{rank}:{epoch}".encode()

    def __call__(self, batch: dict) -> dict[str, torch.Tensor]:
        content = np.ascontiguousarray(stack_column(batch["input_ids"]))
        generator = torch.Generator().manual_seed(zlib.crc32(content.tobytes(), zlib.crc32(self.salt)))
        masked = mask_batch(batch, self.config.mask_rate, self.mask_id, self.vocab_size, self.special_ids, generator,
                            self.config.whole_word_masking)
        if self.config.nsp:
            masked["next_sentence_label"] = torch.from_numpy(np.asarray(batch["next_sentence_label"], dtype=np.int64))
        return masked


def _save_checkpoint(engine, rank: int, world: int, position: dict, history: list, metrics: dict) -> None:
    """Every rank writes its DeepSpeed shard and its own RNG state; Ray Train merges the ranks' files
    into one checkpoint directory in storage (and keeps the last K)."""
    with tempfile.TemporaryDirectory() as tmp:
        engine.save_checkpoint(tmp, tag="state", client_state={"position": position, "history": history})
        torch.save({"torch": torch.get_rng_state()}, Path(tmp) / f"rng_rank{rank}.pt")
        if rank == 0:
            write_world(Path(tmp), world)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))


def _restore(engine, rank: int, checkpoint, universal: bool) -> tuple[dict, list]:
    """Model, optimizer, scheduler, step, data position and RNG from the latest checkpoint, if any
    (`universal`: written by another number of workers, see bioray.train.elastic)."""
    if checkpoint is None:
        return {"phase": 0, "epoch": 0, "micro": 0, "attempt": 0}, []
    with checkpoint.as_directory() as directory, tempfile.TemporaryDirectory() as converted:
        if universal:
            to_universal(Path(directory), "state", Path(converted))
        _, client_state = engine.load_checkpoint(converted if universal else directory, tag="state",
                                                 load_module_strict=True)
        rng = Path(directory) / f"rng_rank{rank}.pt"
        if rng.is_file():  # a rank new to the run keeps its seeded generator
            torch.set_rng_state(torch.load(rng, weights_only=True)["torch"])
    position = {**client_state["position"], "attempt": client_state["position"]["attempt"] + 1}
    log.info("rank %d resumed at step %d (epoch %d, micro-batch %d), attempt %d", rank, engine.global_steps,
             position["epoch"], position["micro"], position["attempt"])
    return position, client_state["history"]


@dataclass(frozen=True)
class Phase:
    """Steps start+1..end of the schedule: the dataset, sequence length and micro-batch size they train on."""

    dataset: str
    seq_len: int
    micro: int
    start: int
    end: int


@dataclass(frozen=True)
class PretrainJob:
    """What the driver hands every Ray Train worker."""

    config: PretrainConfig
    phases: tuple[Phase, ...]
    tokenizer_dir: Path
    output_dir: Path
    context: RunContext
    init_checkpoint: Path | None = None
    heldout_dir: Path | None = None
    exports_dir: Path | None = None  # where the export_steps' encoders go (outlives a restarted driver)
    output_bias: tuple[float, ...] | None = None  # the MLM output bias to start from, one per vocabulary id
    progress_file: Path | None = None


class PretrainWorker:
    """The training loop of one Ray Train worker: phases, micro-batches, logging, checkpoints."""

    def __init__(self, job: PretrainJob):
        progress.use(job.progress_file)
        self.job, self.config = job, (config := job.config)
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        use_deterministic_kernels(config.deterministic)
        torch.manual_seed(config.seed * 1000 + self.rank)
        self.tokenizer = AutoTokenizer.from_pretrained(str(job.tokenizer_dir))
        model = build_mlm_model(len(self.tokenizer), self.tokenizer.pad_token_id, **config.model.model_dump(),
                                init_checkpoint=job.init_checkpoint, nsp=config.nsp)
        if job.output_bias is not None:  # before the engine: rank 0's weights are broadcast
            with torch.no_grad():
                model.cls.predictions.bias.copy_(torch.tensor(job.output_bias))
        self.device = ray.train.torch.get_device()
        model.to(self.device)
        apply_fast_path(model, **config.fast.model_switches())
        self.parameters = mlm_parameters(model, config.mask_rate)
        checkpoint = ray.train.get_checkpoint()
        universal = needs_universal(checkpoint, config.effective_zero_stage, self.world)
        self.engine, self.scheduler = build_engine(model, config, config.use_gpu, self.world, universal)
        self.position, self.history = _restore(self.engine, self.rank, checkpoint, universal)
        self.trace = DataTrace(self.rank, self.position["attempt"])
        self.first_step = self.engine.global_steps  # where this attempt starts (fail fast compares with it)
        self.logger = WorkerLogger(job.context, job.output_dir / SPILL_FILE) if self.rank == 0 else None
        self.meter = Throughput(config.steps, start_step=self.engine.global_steps)
        self.heldout = HeldOut(job.heldout_dir, config, self.tokenizer, self.rank, self.world, self.device) \
            if job.heldout_dir else None
        self.peak = device_peak_flops()
        # STATS sums, then micro-batches; on the device, read only at logging time
        self.window = torch.zeros(len(STATS) + 1, dtype=torch.float64, device=self.device)
        self.preemption = PreemptionCheck(self.rank, self.device)

    def run(self) -> None:
        for index, phase in enumerate(self.job.phases):
            if self.engine.global_steps >= phase.end:
                continue  # finished before a restart
            resumed = self.position.get("phase", 0) == index
            if self._train_phase(index, phase, self.position["epoch"] if resumed else 0,
                                 resumed_skip(self.position, self.world) if resumed else 0):
                if self.rank == 0:  # checkpointed on the driver's SIGTERM: the stage stops, uncommitted
                    (self.job.output_dir / PREEMPTED_FILE).write_text(json.dumps({"step": self.engine.global_steps}))
                    self.logger.close()
                return
        _export(self.engine, self.tokenizer, self.job.output_dir / "model", self.config.effective_zero_stage)
        if self.rank == 0:
            (self.job.output_dir / "history.json").write_text(json.dumps(self.history))
            self.logger.close()

    def _train_phase(self, index: int, phase: Phase, epoch: int, skip: int) -> bool:
        """Train until the phase's last step, epoch after epoch over its dataset, starting `skip`
        micro-batches into `epoch` (a resumed run); True: stopped early, on the driver's SIGTERM."""
        config, engine = self.config, self.engine
        # The global batch stays; a smaller micro-batch means more accumulation (DeepSpeed re-splits).
        engine.set_train_micro_batch_size(phase.micro)
        engine.set_train_batch_size(config.global_batch_size)
        accum = engine.gradient_accumulation_steps()
        per_token = flops_per_token(self.parameters, engine.module.config.num_hidden_layers,
                                    engine.module.config.hidden_size, phase.seq_len)
        if self.rank == 0:
            log.info("pretrain phase %d: steps %d-%d on %d-token sequences, micro-batch %d x %d accumulation",
                     index + 1, engine.global_steps + 1, phase.end, phase.seq_len, phase.micro, accum)
        shard = ray.train.get_dataset_shard(phase.dataset)
        special = list(self.tokenizer.all_special_ids)
        pending = 0  # micro-batches accumulated since the last optimizer step (may span epochs)
        while engine.global_steps < phase.end:
            collate = MaskingCollate(config, self.tokenizer.mask_token_id, len(self.tokenizer), special, self.rank,
                                     epoch)
            batches = shard.iter_torch_batches(batch_size=phase.micro, collate_fn=collate, drop_last=True,
                                               local_shuffle_buffer_size=config.shuffle_buffer,
                                               local_shuffle_seed=config.seed + epoch)
            for micro, batch in enumerate(batches, start=1):
                if micro <= skip:  # trained before the restart: the stream repeats itself, so skip exactly these
                    continue
                pending += 1
                engine.set_gradient_accumulation_boundary(pending == accum)
                self.trace.add(epoch, engine.global_steps + 1, batch)
                self.meter.add(int(batch["attention_mask"].sum()), batch["input_ids"].shape[0])  # on the host
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                loss, stats = pretraining_loss(engine.module, batch, **config.fast.loss_switches())
                engine.backward(loss)
                engine.step()
                self.window[:-1] += stats
                self.window[-1] += 1
                if pending < accum:
                    continue
                pending = 0
                if self._after_step({"phase": index, "epoch": epoch, "micro": micro, "world": self.world},
                                    phase.seq_len, per_token):
                    return True
                if engine.global_steps >= phase.end:
                    break
            epoch, skip = epoch + 1, 0
        return False

    def _after_step(self, position: dict, seq_len: int, per_token: float) -> bool:
        """Log every log_every steps, evaluate on the held-out documents every eval_every steps,
        checkpoint every checkpoint_every steps, all three at the end; checkpoint now on a preemption
        notice. True: stop now (the driver got SIGTERM)."""
        config, step = self.config, self.engine.global_steps
        last = step == config.steps
        metrics = None
        if step % config.log_every == 0 or last:
            metrics = _window_metrics(self.engine, self.scheduler, self.window, self.meter, step, config.nsp)
            self.window.zero_()
            metrics["pretrain/seq_len"] = seq_len
            metrics["pretrain/workers"] = self.world  # fewer after an elastic continuation
            if self.peak:  # on GPU: real-token FLOPs over the peak of all workers' devices
                metrics["pretrain/mfu"] = metrics["pretrain/tokens_per_s"] * per_token / (self.peak * self.world)
        if self.heldout is not None and (step % config.eval_every == 0 or last):
            metrics = {**(metrics or {}), **self.heldout.evaluate(self.engine.module, config)}
        if metrics is not None and self.rank == 0:
            self.history.append({"step": step, "attempt": self.position["attempt"], **metrics})
            self.logger.log(metrics, step)
            if "pretrain/loss" in metrics:
                held = metrics.get("pretrain/heldout_loss")
                held = f" | held-out loss {held:.4f}" if held is not None else ""
                progress.report(log, "step %d/%d loss %.4f acc %.3f%s | %.0f tok/s | ETA %s", step, config.steps,
                         metrics["pretrain/loss"], metrics["pretrain/mlm_accuracy"], held,
                         metrics["pretrain/tokens_per_s"], format_eta(metrics["pretrain/eta_s"]))
        if step in config.export_steps:  # a point of a learning curve (every rank: ZeRO-3 gathers the weights)
            _export(self.engine, self.tokenizer, self.job.exports_dir / f"model-step-{step}",
                    config.effective_zero_stage)
        reported = {"step": step, **{k.split("/")[-1]: v for k, v in (metrics or {}).items()}}
        preempted = 0 if last else self.preemption(step)  # every rank, every step: they agree on the step
        if step % config.checkpoint_every == 0 or last or preempted:
            _save_checkpoint(self.engine, self.rank, self.world, {**position, "attempt": self.position["attempt"]},
                             self.history, reported)
        elif metrics is not None:
            ray.train.report(reported)
        return preempted == STOP


def _train(job: PretrainJob) -> None:
    """One attempt on one worker; an exception of the training code leaves tagged with the step its
    attempt started from and the step it was raised at, for FailFast to judge on the controller."""
    worker = None
    try:
        worker = PretrainWorker(job)
        worker.run()
    except Exception as error:
        failfast.tag(error, *((worker.first_step, worker.engine.global_steps) if worker else (None, None)))
        raise


class HeldOut:
    """The held-out documents' sequences, masked once (the same tokens every evaluation), and their MLM
    loss and accuracy: each rank scores every world-th sequence, one all-reduce sums the counts."""

    def __init__(self, directory: Path, config: PretrainConfig, tokenizer, rank: int, world: int, device):
        table = parquet_dataset(str(directory)).head(  # reads only what it returns
            config.eval_sequences, columns=["input_ids", "token_type_ids", "word_start", "length"])
        table = table.take(list(range(rank, len(table), world)))
        batch = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        masked = mask_batch(batch, config.mask_rate, tokenizer.mask_token_id, len(tokenizer),
                            list(tokenizer.all_special_ids), torch.Generator().manual_seed(config.seed + 7919),
                            config.whole_word_masking) if len(table) else None
        size = config.micro_batch_size
        self.batches = [{k: v[i:i + size].to(device) for k, v in masked.items()}
                        for i in range(0, len(table), size)] if masked else []
        self.device = device

    @torch.no_grad()
    def evaluate(self, model, config: PretrainConfig) -> dict[str, float]:
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss x masked, correct, masked
        model.eval()
        for batch in self.batches:
            _, stats = pretraining_loss(model, batch, **config.fast.loss_switches())
            mlm = dict(zip(STATS, stats))
            totals += torch.stack([mlm["mlm_loss"] * mlm["masked"], mlm["mlm_correct"], mlm["masked"]])
        model.train()
        if dist.is_initialized():
            dist.all_reduce(totals)
        loss_sum, correct, masked = totals.cpu().tolist()
        return {"pretrain/heldout_loss": loss_sum / max(masked, 1),
                "pretrain/heldout_accuracy": correct / max(masked, 1)}


def _window_metrics(engine, scheduler, window: torch.Tensor, meter: Throughput, step: int, nsp: bool) -> dict:
    """Metrics averaged over the logging window and over all workers (one all-reduce)."""
    rates = meter.window(step)
    totals = torch.cat([window, torch.tensor([rates["tokens_per_s"], rates["sequences_per_s"]], dtype=torch.float64,
                                             device=window.device)])
    if dist.is_initialized():
        dist.all_reduce(totals)  # sums: counts add up, and so does every worker's tokens/s (NCCL: on the GPU)
    totals = totals.cpu()
    sums = dict(zip(STATS, totals.tolist()))
    micro_batches = max(totals[len(STATS)].item(), 1)
    grad_norm = engine.get_global_grad_norm()
    metrics = {
        "pretrain/loss": (sums["mlm_loss"] + sums["nsp_loss"]) / micro_batches,
        "pretrain/mlm_accuracy": sums["mlm_correct"] / max(sums["masked"], 1),
        "pretrain/lr": float(scheduler.get_last_lr()[0]),
        "pretrain/grad_norm": float(grad_norm) if grad_norm is not None else 0.0,
        "pretrain/tokens_per_s": float(totals[-2]),
        "pretrain/sequences_per_s": float(totals[-1]),
        "pretrain/eta_s": rates["eta_s"],
    }
    if nsp:
        metrics["pretrain/mlm_loss"] = sums["mlm_loss"] / micro_batches
        metrics["pretrain/nsp_loss"] = sums["nsp_loss"] / micro_batches
        metrics["pretrain/nsp_accuracy"] = sums["nsp_correct"] / max(sums["pairs"], 1)
    return metrics


PREEMPTED_FILE = "preempted.json"  # rank 0's note of the step it stopped at on the driver's SIGTERM


def _sequence_length(sequences_dir: Path) -> int:
    """Positions per packed sequence, from the shards' schema."""
    return parquet_dataset(str(sequences_dir)).schema.field("input_ids").type.list_size


class CheckpointTracker(UserCallback):
    """On the Ray Train controller: records every persisted checkpoint in the stage's MLflow run
    (step, storage URI, size, the metrics reported with it) as `checkpoints/step-<n>.json`. With the
    tracking server unreachable the record goes to the stage's spill file (the driver replays it):
    checkpointing never waits for tracking."""

    def __init__(self, context: RunContext, spill_to: Path, storage: str):
        self.context, self.spill_to, self.storage = context, spill_to, storage

    def after_report(self, run_context, metrics: list[dict], checkpoint: Checkpoint | None) -> None:
        if checkpoint is None:
            return
        from pyarrow.fs import FileSelector

        files = checkpoint.filesystem.get_file_info(FileSelector(checkpoint.path, recursive=True))
        step = int(metrics[0].get("step", 0))
        record = {"step": step, "uri": storage_uri(self.storage, checkpoint.path),
                  "size_bytes": sum(f.size or 0 for f in files), "metrics": metrics[0]}
        items = [record_item(record, f"checkpoints/step-{step:08d}.json"),
                 metrics_item({"pretrain/checkpoint_size_mb": record["size_bytes"] / 1e6}, step)]
        if not send_or_spill(lambda: self.context.client, self.context.run_id, items, self.spill_to):
            log.warning("checkpoint %d: MLflow unreachable, its record is kept in %s", step, self.spill_to)


def _sequences(directory: Path, nsp: bool):
    columns = ["input_ids", "token_type_ids", "word_start", "length"] + (["next_sentence_label"] if nsp else [])
    return read_shards(directory, columns)


def _ordered_split() -> DataConfig:
    """Every worker gets the same blocks in the same order on every attempt: Ray Data hands blocks to the
    workers' splits as they arrive, so without preserve_order which worker reads which shard depends on
    read timing, and a resumed run would skip different micro-batches than it trained on."""
    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    # the blocks read ahead of the workers stay within one fixed budget, whatever the number of shards
    options.resource_limits = options.resource_limits.copy(object_store_memory=IN_FLIGHT_BYTES)
    return DataConfig(execution_options=options, enable_shard_locality=False)


def run_pretrain(config: PretrainConfig, *, sequences_dir: Path, tokenizer_dir: Path, output: Path, storage: str,
                 run_name: str, context: RunContext, init_checkpoint: Path | None, storage_endpoint: str | None = None,
                 long_sequences_dir: Path | None = None, heldout_dir: Path | None = None,
                 exports_dir: Path | None = None, output_bias=None, progress_file: Path | None = None) -> dict:
    """Train, resuming from the last checkpoint of an earlier attempt with the same run name (Ray
    Train restores a run from its storage path and name) and after worker failures (FailureConfig).

    With config.long_phase_fraction, the last steps train on `long_sequences_dir` (the tokenize
    stage's long sequences); with `heldout_dir`, the held-out MLM loss is measured on it every
    config.eval_every steps. The encoder as it is at config.export_steps goes to `exports_dir`
    (which outlives a restarted driver), then beside the final model as `model-step-<n>/`. With
    `output_bias` (one float per vocabulary id), the MLM output bias starts there. `storage` is a path
    or s3:// (at `storage_endpoint`): bioray.storage."""
    check_storage(storage, storage_endpoint)  # before any worker starts: one line, not a retried crash
    storage_path, storage_filesystem = train_storage(storage, storage_endpoint)
    if config.export_steps and exports_dir is None:
        raise ValueError("pretrain.export_steps needs a directory for the exports")
    cut = config.steps - config.long_steps  # the last step of the first phase
    phases = [Phase("train", _sequence_length(sequences_dir), config.micro_batch_size, 0, cut)]
    if config.long_steps:
        if long_sequences_dir is None:
            raise ValueError("pretrain.long_phase_fraction is set but the tokenize stage wrote no long sequences")
        phases.append(Phase("train_long", _sequence_length(long_sequences_dir), config.long_micro, cut, config.steps))
    job = PretrainJob(config, tuple(phases), tokenizer_dir, output, context, init_checkpoint, heldout_dir, exports_dir,
                      None if output_bias is None else tuple(float(b) for b in output_bias), progress_file)
    datasets = {phase.dataset: _sequences(directory, config.nsp)
                for phase, directory in zip(phases, (sequences_dir, long_sequences_dir))}
    trainer = TorchTrainer(
        lambda: _train(job),  # on every worker
        scaling_config=ScalingConfig(num_workers=scaling_workers(config), use_gpu=config.use_gpu,
                                     resources_per_worker=None if config.use_gpu else {"CPU": config.cpus_per_worker}),
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
        run_config=RunConfig(name=run_name, storage_path=storage_path, storage_filesystem=storage_filesystem,
                             checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
                             failure_config=FailureConfig(max_failures=config.max_failures),
                             callbacks=[CheckpointTracker(context, output / SPILL_FILE, storage),
                                        failfast.FailFast()]),
        datasets=datasets,
        dataset_config=_ordered_split(),
    )
    try:
        result = trainer.fit()
    except ControllerError as error:  # FailFast's: the worker's own exception, not Ray's wrapper
        raise failfast.unwrap(error) from None
    if (output / PREEMPTED_FILE).is_file():
        step = json.loads((output / PREEMPTED_FILE).read_text())["step"]
        raise Preempted(f"checkpoint of step {step} of {config.steps} in {result.checkpoint.path}")
    for step in config.export_steps:
        export = job.exports_dir / f"model-step-{step}"
        if not export.is_dir():
            raise FileNotFoundError(f"pretrain: the export of step {step} is missing from {exports_dir}")
        shutil.move(str(export), str(output / export.name))
    (output / "deepspeed_config.json").write_text(json.dumps(deepspeed_config(config), indent=2))
    history = json.loads((output / "history.json").read_text())
    last = history[-1] if history else {}
    metrics = {
        "pretrain/final_loss": last.get("pretrain/loss", float("nan")),
        "pretrain/final_mlm_accuracy": last.get("pretrain/mlm_accuracy", float("nan")),
        "pretrain/steps": last.get("step", 0),
        # token positions trained on (packed sequences are full, so nearly all of them are real tokens)
        "pretrain/tokens": config.global_batch_size * sum((p.end - p.start) * p.seq_len for p in phases),
        "checkpoint_path": storage_uri(storage, result.checkpoint.path) if result.checkpoint else "",
    }
    if "pretrain/heldout_loss" in last:
        metrics["pretrain/final_heldout_loss"] = last["pretrain/heldout_loss"]
        metrics["pretrain/final_heldout_accuracy"] = last["pretrain/heldout_accuracy"]
    if config.nsp:
        metrics["pretrain/final_nsp_accuracy"] = last.get("pretrain/nsp_accuracy", float("nan"))
    return metrics

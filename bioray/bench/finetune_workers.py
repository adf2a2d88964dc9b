"""`bioray bench finetune --workers N`: both sides data-parallel on N processes, same global batch.

(a) bioray: the pipeline's own multi-worker path, `run_finetune` with `num_workers=N` (a long-lived
    worker group of Ray actors, DDP over gloo), on a local Ray started once for all seeds, each run
    tracked in a throwaway MLflow store; the fine-tuned model is read back from its output folder and
    scored as `_bioray`'s is.
(b) baseline: HF's Trainer on N torchrun processes (bioray.bench.hf_trainer_ddp), batch_size / N
    sentences per process per step: the global batch is bioray's batch_size.
Every process of either side runs cores / N torch threads (OMP_NUM_THREADS, set before Ray starts its
workers and for torchrun's processes), so neither side gets more of the machine.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bioray.config import DatasetConfig, TrainingConfig
from bioray.metric_names import FINETUNE_STARTUP, FINETUNE_TRAIN_SECONDS
from bioray.tasks.ner import NerTask, predict_tags
from bioray.tracking.context import RunContext


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def check_batch(batch_size: int, workers: int) -> None:
    """The Trainer's per-process batch is batch_size / workers: it must divide evenly."""
    if batch_size % workers:
        raise ValueError(f"batch size {batch_size} is not divisible by {workers} workers: the HF Trainer's "
                         f"processes would not add up to the same global batch")


@dataclass(frozen=True)
class Session:
    """What every seed's runs share: the worker count and threads, a work folder, the MLflow store."""

    workers: int
    threads: int  # torch threads per process, both sides
    ray_threads: int  # what a Ray worker's torch reports (should equal threads)
    workdir: Path
    tracking_uri: str
    experiment_id: str
    group: object  # the bioray.train.worker_group.WorkerGroup every seed's fine-tune runs on, as stages share one

    def start_run(self, name: str) -> RunContext:
        from bioray.tracking.store import client_for

        run_id = client_for(self.tracking_uri).create_run(self.experiment_id, run_name=name).info.run_id
        return RunContext(self.tracking_uri, self.experiment_id, run_id, run_id)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@contextlib.contextmanager
def workers_session(workers: int, workdir: Path) -> Iterator[Session]:
    """A local Ray (unless one is up: then its workers keep their threads) whose workers inherit
    OMP_NUM_THREADS = cores / workers, and a SQLite MLflow store in workdir."""
    import ray

    from bioray.tracking.store import client_for, ensure_experiment
    from bioray.train.finetune import WORKER_IMPORTS
    from bioray.train.worker_group import Scaling, WorkerGroup

    threads = threads_per_worker(workers)
    started_here = not ray.is_initialized()
    saved = os.environ.get("OMP_NUM_THREADS")
    if started_here:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # Ray leaves a set OMP_NUM_THREADS as it is
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, workers) + 1, include_dashboard=False,
                 log_to_driver=False)
    try:
        ray_threads = ray.get(ray.remote(num_cpus=1)(_torch_threads).remote())
        uri = f"sqlite:///{workdir / 'mlflow.db'}"
        experiment = ensure_experiment(client_for(uri), "bench-finetune", workdir / "mlflow-artifacts")
        print(f"bench finetune: {workers} workers a side, {threads} torch threads each (Ray workers report "
              f"{ray_threads})", file=sys.stderr)
        group = WorkerGroup(Scaling(workers, imports=WORKER_IMPORTS))  # as a stage's group: imports done once
        try:
            yield Session(workers, threads, ray_threads, workdir, uri, experiment, group)
        finally:
            group.shutdown()
    finally:
        if started_here:
            ray.shutdown()
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved


def bioray_workers(shared: Session, model_dir: Path, train, test, labels, config: TrainingConfig, seed: int,
                   workdir: Path) -> dict:
    """run_finetune on the session's group of shared.workers Ray workers, then the test set predicted by
    the saved model. wall_seconds: the whole call (model loaded and the sentences encoded on every
    worker, the epochs, the model saved); seconds: that less the start-up the run reports as
    finetune/startup_s (startup_seconds)."""
    from transformers import AutoTokenizer

    from bioray.train.finetune import run_finetune

    task = NerTask(DatasetConfig(name="ncbi-disease", task="ner", train="-", test="-"))
    output = workdir / "bioray"
    output.mkdir()
    context = shared.start_run(f"bioray-seed{seed}")
    started = time.perf_counter()
    config = TrainingConfig.model_validate({**config.model_dump(), "num_workers": shared.workers})
    metrics = run_finetune(config, task, {"train": train}, labels, seed, encoder_dir=model_dir, output=output,
                           context=context, group=shared.group)
    wall = time.perf_counter() - started
    context.client.set_terminated(context.run_id)
    tokenizer = AutoTokenizer.from_pretrained(str(output / "model"))
    model = task.build_model(str(output / "model"), labels)  # as the evaluate stage reads it
    return {"seconds": metrics[FINETUNE_TRAIN_SECONDS], "wall_seconds": wall,
            "startup_seconds": metrics[FINETUNE_STARTUP],
            "predicted": predict_tags(model, tokenizer, test, labels, config.max_length, 64)}


def baseline_workers(shared: Session, model_dir: Path, train, test, labels, config: TrainingConfig, seed: int,
                     workdir: Path) -> dict:
    """HF's Trainer on shared.workers torchrun processes; seconds: rank 0's `trainer.train()`."""
    work = workdir / "trainer-ddp"
    work.mkdir()
    inputs = {"model_dir": str(model_dir), "train": train, "test": test, "labels": labels,
              "config": config.model_dump(), "seed": seed, "workdir": str(work / "trainer"), "workers": shared.workers,
              "threads": shared.threads, "result": str(work / "result.pkl")}
    (work / "inputs.pkl").write_bytes(pickle.dumps(inputs))
    root = str(Path(__file__).resolve().parents[2])  # the processes import this bioray, whatever is installed
    env = {**os.environ, "OMP_NUM_THREADS": str(shared.threads), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={shared.workers}", "-m", "bioray.bench.hf_trainer_ddp",
                           str(work / "inputs.pkl")], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the HF Trainer's torchrun exited with {done.returncode}:\n{done.stderr[-4000:]}")
    return pickle.loads((work / "result.pkl").read_bytes())

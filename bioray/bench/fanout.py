"""`bioray bench fanout`: many small fine-tunes as pipeline stages, against the same fine-tunes one after
another in one process, in one run. A BLURB-style evaluation is this shape: datasets x seeds x a
learning-rate grid of small fine-tuning runs, where what each run costs to start can outweigh its
training.

All three figures fine-tune the same tiny BERT (a random-init checkpoint with a WordPiece vocabulary of
the training text) on the same first `max_train` NCBI-disease training sentences, for the same epochs,
batch size, learning rates and seeds:
(a) bioray: a workflow whose encoder is that checkpoint and whose finetune section makes K stages
    (seeds x lr grid, no dev set, no model logged), run with `run_workflow` on a local Ray of
    cores + 1 logical CPUs (so `cores` fine-tunes train at once). The checkpoint's encoder stage runs
    first; the wall time is that of a second run whose targets are the K finetune stages alone.
    Each stage's start-up (`finetune/startup_s`: from the runner submitting it to its first optimizer
    step) is read from its metrics when this bioray records it;
(b) baseline: HF's `Trainer` (run_ner.py's recipe) for the same K runs one after another in this
    process, with all of its torch threads, timed end to end (model load, encoding and training each);
(c) ideal: every core busy training, no start-up at all: cores x 3600 / (one run's training time with
    one torch thread, bioray's training loop in this process).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from bioray import metric_names
from bioray.bench.finetune import SHAPES, bioray_train, hf_trainer, initial_checkpoint
from bioray.config import TrainingConfig
from bioray.tasks.formats.conll import read_conll
from bioray.tasks.ner import label_list

DEFAULT_LRS = (1e-3, 5e-4, 3e-4, 1e-4)
ARM = "tiny"


def stage_grid(stages: int, lrs: tuple[float, ...] = DEFAULT_LRS) -> tuple[list[int], list[float]]:
    """(seeds, learning rates) making `stages` runs: the most of the grid that divides them evenly
    (20 -> 5 seeds x 4 rates, 3 -> 1 seed x 3 rates, 7 -> 7 seeds x the first rate)."""
    width = max(g for g in range(1, min(len(lrs), stages) + 1) if stages % g == 0)
    return [42 + i for i in range(stages // width)], list(lrs[:width])


def _workflow(workdir: Path, data: Path, checkpoint: Path, seeds: list[int], lrs: list[float], max_train: int,
              epochs: int, batch_size: int, max_length: int, cores: int) -> Path:
    tree = {
        "name": "bench-fanout", "workdir": str(workdir / "work"), "data_root": str(data),
        "ray": {"num_cpus": cores + 1},  # the runner leaves one to data tasks: `cores` fine-tunes at once
        "tracking": {"experiment": "bench-fanout"},
        "encoders": [{"name": ARM, "source": "checkpoint", "checkpoint": str(checkpoint)}],
        "finetune": {"datasets": [{"name": "ncbi-disease", "task": "ner", "train": "train.tsv", "test": "test.tsv",
                                   "max_train_examples": max_train}],
                     "seeds": seeds, "lr": lrs if len(lrs) > 1 else lrs[0], "epochs": epochs,
                     "batch_size": batch_size, "max_length": max_length, "log_model": False},
        "registry": {"enabled": False},
    }
    path = workdir / "fanout.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _pipeline(workflow: Path, quiet: bool = True) -> dict:
    """The encoder stage first, then the finetune stages alone, timed; each stage's metrics."""
    from bioray.pipeline.inputs import load_checked
    from bioray.pipeline.plan import build_plan
    from bioray.pipeline.runner import run_workflow

    config = load_checked(workflow, read_datasets=True)
    nodes = build_plan(config)
    upstream = [n.name for n in nodes if n.kind == "encoder"]
    finetunes = [n.name for n in nodes if n.kind == "finetune"]
    for targets in (upstream, finetunes):
        started = time.perf_counter()
        summary = run_workflow(config, targets, workflow_file=str(workflow), quiet=quiet)
        seconds = time.perf_counter() - started
        if summary.failed:
            raise RuntimeError("bench fanout: stages failed: " + "; ".join(f"{k}: {v}"
                                                                            for k, v in summary.failed.items()))
    ran = [name for name in finetunes if not summary.results[name].cached]
    if len(ran) != len(finetunes):
        raise RuntimeError(f"bench fanout: {len(finetunes) - len(ran)} finetune stage(s) were cached, not run")
    return {"seconds": seconds, "metrics": {name: summary.results[name].metrics for name in finetunes},
            "waited_for_cpus": len(summary.waited_for_cpus)}


def _baseline(model_dir: Path, train, labels, configs: list[tuple[int, TrainingConfig]], workdir: Path) -> float:
    """The K runs with HF's Trainer one after another in this process: model load, encoding, training."""
    started = time.perf_counter()
    for i, (seed, config) in enumerate(configs):
        trainer, _ = hf_trainer(model_dir, train, labels, config, seed, workdir / f"trainer-{i}")
        trainer.train()
    return time.perf_counter() - started


def _single_thread_compute(model_dir: Path, train, labels, seed: int, config: TrainingConfig) -> float:
    """One run's training time with one torch thread (bioray's training loop, in this process)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return bioray_train(model_dir, train, labels, config, seed)[2]
    finally:
        torch.set_num_threads(threads)


def _per_hour(stages: int, seconds: float) -> float:
    return stages * 3600 / seconds


def bench_fanout(data: Path, stages: int = 20, max_train: int = 200, epochs: int = 1, batch_size: int = 32,
                 max_length: int = 128, lrs: tuple[float, ...] = DEFAULT_LRS, size: str = "tiny",
                 quiet: bool = True) -> dict:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    cores = os.cpu_count() or 1
    seeds, grid = stage_grid(stages, lrs)
    train = read_conll(data / "train.tsv")[:max_train]
    labels = label_list(train)
    configs = [(seed, TrainingConfig(epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length))
               for seed in seeds for lr in grid]
    with tempfile.TemporaryDirectory(prefix="bioray-fanout-") as tmp:
        workdir = Path(tmp)
        checkpoint = initial_checkpoint(train, workdir / "init", 0, SHAPES[size])
        # in-process figures first, while no Ray worker shares the cores
        compute = _single_thread_compute(checkpoint, train, labels, *configs[0])
        baseline_seconds = _baseline(checkpoint, train, labels, configs, workdir)
        workflow = _workflow(workdir, data, checkpoint, seeds, grid, max_train, epochs, batch_size, max_length, cores)
        pipeline = _pipeline(workflow, quiet)
    startups = [m[metric_names.FINETUNE_STARTUP] for m in pipeline["metrics"].values()]
    stage_seconds = [m[metric_names.STAGE_SECONDS] for m in pipeline["metrics"].values()]
    ours, baseline = _per_hour(stages, pipeline["seconds"]), _per_hour(stages, baseline_seconds)
    return {
        "stages": len(pipeline["metrics"]), "seeds": seeds, "lrs": grid,
        "stages_per_hour": ours, "baseline_stages_per_hour": baseline, "speedup": ours / baseline,
        "ideal_stages_per_hour": cores * 3600 / compute,
        "startup_median_s": statistics.median(startups), "startup_max_s": max(startups),
        "startup_stages": len(startups),
        "wall_s": pipeline["seconds"], "baseline_wall_s": baseline_seconds, "compute_s": compute,
        "stage_seconds_median": statistics.median(stage_seconds), "stage_seconds_max": max(stage_seconds),
        "waited_for_cpus": pipeline["waited_for_cpus"], "cores": cores, "ray_cpus": cores + 1,
        "baseline_torch_threads": torch.get_num_threads(), "train_sentences": len(train), "epochs": epochs,
        "batch_size": batch_size, "max_length": max_length, "data": str(data),
        "model": f"random init, {size}: {SHAPES[size].layers} layers, hidden {SHAPES[size].hidden}",
    }


def render(result: dict) -> str:
    """The result as the table `bioray bench fanout` prints."""

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"  # the HF loop has no stage start-up

    rows = [("bioray pipeline", result["stages_per_hour"], result["wall_s"], result["startup_median_s"],
             result["startup_max_s"]),
            ("HF Trainer loop", result["baseline_stages_per_hour"], result["baseline_wall_s"], None, None),
            ("ideal", result["ideal_stages_per_hour"], result["stages"] * 3600 / result["ideal_stages_per_hour"],
             0.0, 0.0)]
    grid = ",".join(f"{lr:g}" for lr in result["lrs"])
    lines = [
        f"{result['stages']} fine-tunes ({len(result['seeds'])} seeds x lr {grid})"
        f" of {result['model']} on {result['train_sentences']} NCBI-disease sentences x {result['epochs']} epoch(s), "
        f"{result['cores']} cores",
        f"{'':16s} {'stages/h':>9s} {'wall s':>8s} {'start-up median s':>18s} {'max s':>7s}",
        *(f"{name:16s} {rate:9.0f} {wall:8.1f} {seconds(median):>18s} {seconds(most):>7s}"
          for name, rate, wall, median, most in rows),
        f"speed-up over the HF loop {result['speedup']:.2f}x; ideal: {result['cores']} cores x one run's "
        f"{result['compute_s']:.1f} s of single-thread training, no start-up",
    ]
    return "\n".join(lines)

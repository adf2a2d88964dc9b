"""Peak memory of pretraining (Ray Train + DeepSpeed on CPU, a tiny model) reading a directory of token
shards, and the same directory copied `--copies` times: does a worker's memory depend on how many
shards there are? Prints one JSON line per size. Run as a script:

    python -m tests.support.pretrain_memory SEQUENCES_DIR TOKENIZER_DIR --copies 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import ray
from mlflow.tracking import MlflowClient

from bioray.bench.memory import PeakMemory
from bioray.config import ModelConfig, PretrainConfig
from bioray.tracking.context import RunContext
from bioray.train.pretrain import run_pretrain

WORKER = "ray::RayTrainWorker"


def _copied(sequences: Path, copies: int, target: Path) -> Path:
    target.mkdir()
    for copy in range(copies):
        for shard in sequences.glob("*.parquet"):
            shutil.copyfile(shard, target / f"c{copy:03d}-{shard.name}")
    return target


def measure(sequences: Path, tokenizer: Path, work: Path, name: str, steps: int) -> dict:
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("memory") or client.get_experiment(client.create_experiment("memory"))
    run_id = client.create_run(experiment.experiment_id).info.run_id
    config = PretrainConfig(model=ModelConfig(layers=2, hidden=64, heads=2, intermediate=128, max_position=128),
                            num_workers=2, steps=steps, global_batch_size=32, micro_batch_size=16, lr=1e-3,
                            warmup_steps=2, log_every=10, checkpoint_every=steps, shuffle_buffer=256)
    (work / name).mkdir()
    with PeakMemory() as memory:
        run_pretrain(config, sequences_dir=sequences, tokenizer_dir=tokenizer, output=work / name,
                     storage=str(work / "storage"), run_name=name,
                     context=RunContext(uri, experiment.experiment_id, run_id, run_id), init_checkpoint=None)
    return {"shards": len(list(sequences.glob("*.parquet"))), "steps": steps, "peak_mb": memory.peak / 1e6,
            "workers_peak_mb": memory.kind_peaks.get(WORKER, 0) / 1e6, "driver_peak_mb": memory.driver_peak / 1e6,
            "at_peak_mb": {k: round(v / 1e6, 1) for k, v in sorted(memory.at_peak.items(), key=lambda kv: -kv[1])}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sequences", type=Path)
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bioray-pretrain-memory-") as tmp:
        work = Path(tmp)
        for name, copies in (("one", 1), ("scaled", args.copies)):
            ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)  # a fresh session per size
            try:
                sequences = args.sequences if copies == 1 else _copied(args.sequences, copies, work / "sequences")
                print(json.dumps(measure(sequences, args.tokenizer, work, name, args.steps)), flush=True)
            finally:
                ray.shutdown()


if __name__ == "__main__":
    main()

"""One process of `bioray bench finetune --workers N`'s baseline: HF's Trainer under torchrun, DDP over
gloo on CPU, as a user of run_ner.py would scale it out. The bench runs

    python -m torch.distributed.run --standalone --nproc_per_node N -m bioray.bench.hf_trainer_ddp INPUTS

INPUTS is a pickle of the bench's arguments (bioray.bench.finetune_workers.baseline_workers); every
process trains and predicts (Trainer gathers the predictions), rank 0 writes the test predictions,
the seconds of `trainer.train()` and the threads it ran with to the file INPUTS names.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import torch

from bioray.bench.finetune import trainer_baseline
from bioray.config import TrainingConfig


def main(inputs_file: str) -> None:
    inputs = pickle.loads(Path(inputs_file).read_bytes())
    torch.set_num_threads(inputs["threads"])  # OMP_NUM_THREADS says the same; torchrun would otherwise say 1
    result = trainer_baseline(Path(inputs["model_dir"]), inputs["train"], inputs["test"], inputs["labels"],
                              TrainingConfig.model_validate(inputs["config"]), inputs["seed"],
                              Path(inputs["workdir"]), workers=inputs["workers"])
    if int(os.environ.get("RANK", "0")) == 0:
        result.update(torch_threads=torch.get_num_threads(), world_size=int(os.environ.get("WORLD_SIZE", "1")))
        Path(inputs["result"]).write_bytes(pickle.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])

"""Elastic continuation: a pretraining checkpoint written by one number of workers, continued on another.

Ray Train resizes the worker group (ScalingConfig(num_workers=(min, max))): after a lost node it restarts
on the workers it can still place, and it grows the group back, from the last checkpoint, when
resources return (checked every `elastic_resize_monitor_interval_s`). What the workers must do
themselves is in this module:

- the optimizer state: a ZeRO-1/2 checkpoint holds one partition of the Adam moments per rank and
  DeepSpeed refuses to load it on another data-parallel size, so it is first converted to DeepSpeed's
  universal format (per-parameter fp32 weights and moments, its ds_to_universal tool) and loaded
  from that (`checkpoint.load_universal`); ZeRO-0 checkpoints load as they are;
- the data position: see `resumed_skip`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import zlib
from pathlib import Path

import numpy as np
import torch

WORLD_FILE = "world.json"  # beside DeepSpeed's files: the number of workers that wrote the checkpoint
TRACE_ENV = "BIORAY_DATA_TRACE"  # a folder: every trained sequence's checksum, per rank and attempt (diagnostic)


def scaling_workers(config) -> int | tuple[int, int]:
    """ScalingConfig's num_workers: a (min, max) range makes Ray's worker group elastic."""
    return (config.min_workers, config.num_workers) if config.elastic else config.num_workers


def write_world(directory: Path, world: int) -> None:
    (directory / WORLD_FILE).write_text(json.dumps({"world": world}))


def saved_world(checkpoint) -> int | None:
    """The number of workers that wrote a Ray checkpoint (read in place: no download); None if not recorded."""
    path = f"{checkpoint.path.rstrip('/')}/{WORLD_FILE}"
    try:
        with checkpoint.filesystem.open_input_stream(path) as stream:
            return int(json.loads(stream.read())["world"])
    except FileNotFoundError:
        return None


def needs_universal(checkpoint, zero_stage: int, world: int) -> bool:
    """Whether the checkpoint's optimizer partitions must be re-split for `world` workers."""
    if checkpoint is None or zero_stage not in (1, 2):  # ZeRO-0 saves the whole optimizer state once
        return False
    saved = saved_world(checkpoint)
    return saved is not None and saved != world


def to_universal(directory: Path, tag: str, output: Path) -> None:
    """DeepSpeed's universal checkpoint of `directory/tag` in `output/tag` (the client state comes along)."""
    from deepspeed.checkpoint import ds_to_universal

    args = argparse.Namespace(input_folder=str(directory / tag), output_folder=str(output / tag),
                              num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False, strict=True,
                              inject_missing_state=True)
    with contextlib.redirect_stdout(io.StringIO()):  # its progress bars
        ds_to_universal.main(args)


def resumed_skip(position: dict, world: int) -> int:
    """Micro-batches a rank skips in the epoch it resumes in.

    On the same number of workers: exactly those it trained, since the ordered split hands every rank
    the same stream again. On another number: the checkpoint's ranks had together trained
    saved_world x micro micro-batches of the epoch; the epoch's stream is split anew over `world`
    ranks and each skips its share of that count, rounded down. So the epoch still trains its number
    of sequences (up to world-1 micro-batches more), but not the same ones: the new split's first
    sequences are not those the old ranks took, so some sequences of that epoch are trained twice and
    as many are not trained in it. Later epochs are whole."""
    saved = position.get("world", world)
    return position["micro"] * saved // world


class DataTrace:
    """With BIORAY_DATA_TRACE set: one JSON line per trained micro-batch (epoch, the optimizer step it
    counts towards, each sequence's CRC-32 over its int64 token ids), in `<folder>/rank<r>-attempt<a>.jsonl`."""

    def __init__(self, rank: int, attempt: int):
        folder = os.environ.get(TRACE_ENV)
        self.file = open(Path(folder) / f"rank{rank}-attempt{attempt}.jsonl", "a") if folder else None

    def add(self, epoch: int, step: int, batch: dict) -> None:
        if self.file is None:
            return
        tokens = torch.where(batch["labels"] >= 0, batch["labels"], batch["input_ids"])  # unmasked, as stored
        rows = [zlib.crc32(row.numpy().astype(np.int64).tobytes()) for row in tokens]
        self.file.write(json.dumps({"epoch": epoch, "step": step, "crc": rows}) + "\n")
        self.file.flush()

"""Real torch.distributed ranks over gloo on this machine, for DDP and DeepSpeed checks without Ray:
every rank runs `work(rank)` (a module-level function, so spawned processes can import it) and rank
0's result, JSON-serialisable, comes back."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp


def run_ranks(work, world: int = 2):
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "rank0.json"
        mp.start_processes(_rank, args=(work, _free_port(), str(out), world), nprocs=world, start_method="spawn")
        return json.loads(out.read_text())


def _rank(rank: int, work, port: int, out: str, world: int) -> None:
    os.environ.update(DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    result = work(rank)
    if rank == 0:
        Path(out).write_text(json.dumps(result))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

"""Fault: a node lost for good mid-pretraining, with pretrain.min_workers 1. On a real two-node Ray
cluster (one training worker per node: 2 CPUs each, the head has 3, the second node 2), the second
node is SIGKILLed after a checkpoint; Ray Train's elastic worker group restarts on the one worker the
head can place, bioray re-splits the ZeRO optimizer state (DeepSpeed universal checkpoint) and the
data, and the run finishes at pretrain.steps with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest

from bioray.train.elastic import TRACE_ENV
from tests.integration.test_pretrain_ray import LONG_FROM, STEPS, _history, corpus_parts
from tests.reliability.test_worker_killed import _registered_checkpoints
from tests.support.cluster import two_node_ray_cluster

REPO = Path(__file__).resolve().parents[2]
DRIVER = """
import sys, ray
from pathlib import Path
from tests.integration.test_pretrain_ray import _config, _pretrain
parts = {{k: Path(v) for k, v in {parts!r}.items()}}
ray.init(address={address!r}, log_to_driver=False)
_pretrain(parts, Path({tmp!r}), "elastic", _config(min_workers=1, cpus_per_worker=2, max_failures=5))
"""


def _trace(folder: Path) -> dict[tuple[int, int], list[dict]]:
    """{(rank, attempt): the micro-batches it trained, in order}."""
    lines = {}
    for path in folder.glob("rank*-attempt*.jsonl"):
        rank, attempt = (int(part) for part in path.stem.removeprefix("rank").split("-attempt"))
        lines[rank, attempt] = [json.loads(line) for line in path.read_text().splitlines()]
    return lines


@pytest.mark.extended
@pytest.mark.timeout(1800)
def test_lost_node_continues_on_fewer_workers_to_the_last_step(corpus_template, tmp_path):
    parts = corpus_parts(corpus_template)
    storage, trace = tmp_path / "storage" / "elastic", tmp_path / "trace"
    trace.mkdir()
    lost: list[int] = []
    with two_node_ray_cluster({TRACE_ENV: str(trace), "PYTHONPATH": str(REPO)}, head_cpus=3, worker_cpus=2) as cluster:
        def lose_node_after_a_checkpoint():
            deadline = time.time() + 900
            while time.time() < deadline and not _registered_checkpoints(storage):
                time.sleep(0.5)
            cluster.lose_worker_node()
            lost.append(_registered_checkpoints(storage)[-1]["metrics"]["step"])

        killer = threading.Thread(target=lose_node_after_a_checkpoint, daemon=True)
        killer.start()
        code = DRIVER.format(parts={k: str(v) for k, v in parts.items()}, address=cluster.address, tmp=str(tmp_path))
        env = {**os.environ, **cluster.env, "RAY_ADDRESS": "", "PYTHONPATH": str(REPO)}
        driver = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                                timeout=1500)
        killer.join(timeout=5)
    assert driver.returncode == 0, driver.stderr[-4000:]
    assert lost, "the second node was never lost: the test proves nothing"

    history = _history(tmp_path, "elastic")
    assert sorted(history) == list(range(1, STEPS + 1))  # every step once, to the last
    restart = max(s for s, row in history.items() if row["attempt"] == 0)
    assert restart % 8 == 0 and restart >= lost[0]  # a checkpoint step (the one registered last)
    assert restart < LONG_FROM  # the one worker trains the rest of phase 1 and all of phase 2
    assert [history[s]["pretrain/workers"] for s in (1, restart)] == [2, 2]
    assert all(history[s]["pretrain/workers"] == 1 and history[s]["attempt"] >= 1
               for s in range(restart + 1, STEPS + 1))

    # the data, from every trained sequence's checksum: attempt 0 up to the checkpoint, then the continuation
    lines = _trace(trace)
    before = [line for (rank, attempt), got in lines.items() if attempt == 0 for line in got
              if line["step"] <= restart]
    resumed_attempt = max(attempt for _, attempt in lines)
    after = lines[0, resumed_attempt]
    assert {rank for rank, attempt in lines if attempt == resumed_attempt} == {0}
    per_step = Counter()
    for line in before + after:
        per_step[line["step"]] += len(line["crc"])
    assert set(per_step.values()) == {32} and sorted(per_step) == list(range(1, STEPS + 1))  # same global batch

    # the interrupted epoch (epoch 0 of phase 1): the 2 ranks had trained C sequences; the one worker
    # skipped the first C of its new split and trained on from there
    trained_before = [crc for line in before for crc in line["crc"]]
    trained_after = [crc for line in after if line["step"] < LONG_FROM and line["epoch"] == 0 for crc in line["crc"]]
    assert all(line["epoch"] == 0 for line in before)
    assert len(trained_before) == restart * 32 == len(set(trained_before))
    assert len(trained_after) == (LONG_FROM - 1 - restart) * 32 == len(set(trained_after))
    table = pads.dataset(str(parts["tokenize"] / "sequences"), format="parquet").to_table(columns=["input_ids"])
    epoch = {zlib.crc32(np.asarray(row, dtype=np.int64).tobytes()) for row in table.column("input_ids").to_pylist()}
    assert set(trained_before) | set(trained_after) <= epoch
    repeated = set(trained_before) & set(trained_after)
    # what the continuation's skip passed over without training it in this epoch (it never saw them: the
    # count is the skipped prefix, C, minus the sequences of that prefix the two ranks had trained)
    print(f"elastic 2->1 at step {restart}: {len(trained_before)} sequences trained before, "
          f"{len(trained_after)} after in the same epoch, {len(repeated)} of them trained twice")
    assert len(repeated) <= len(trained_before)

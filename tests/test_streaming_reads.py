"""Parquet reads that hold one row group at a time, whatever the file size (pyarrow's default holds the file)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUPS, ROWS, TEXT_BYTES = 48, 256, 2048  # 24 MiB of incompressible text in 0.5 MiB row groups

# Each read runs in a fresh interpreter: pyarrow's pool records the largest allocation total of a process.
READ = """
import json, sys
import pyarrow as pa, pyarrow.parquet as pq
from bioray.data.streaming import parquet_dataset, parquet_file
path, how = sys.argv[1], sys.argv[2]
if how == "default_file":
    batches = pq.ParquetFile(path).iter_batches(batch_size=64)
elif how == "file":
    batches = parquet_file(path).iter_batches(batch_size=64)
else:
    batches = parquet_dataset(path).to_batches(batch_size=64, batch_readahead=1, fragment_readahead=1)
rows = sum(b.num_rows for b in batches)
print(json.dumps({"rows": rows, "pool_peak": pa.default_memory_pool().max_memory()}))
"""


def _read(path, how: str) -> dict:
    done = subprocess.run([sys.executable, "-c", READ, str(path), how], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_streaming_reads_hold_a_few_row_groups_not_the_file(tmp_path):
    path = tmp_path / "big.parquet"
    rng = np.random.default_rng(0)
    with pq.ParquetWriter(path, pa.schema([("text", pa.string())])) as writer:
        for _ in range(ROW_GROUPS):
            texts = [rng.bytes(TEXT_BYTES // 2).hex() for _ in range(ROWS)]
            writer.write_table(pa.table({"text": texts}), row_group_size=ROWS)
    file_bytes = path.stat().st_size
    row_group_bytes = file_bytes / ROW_GROUPS

    default = _read(path, "default_file")
    assert default["pool_peak"] >= file_bytes  # what the helpers avoid: the whole file read up front
    for how in ("file", "dataset"):
        read = _read(path, how)
        assert read["rows"] == ROW_GROUPS * ROWS
        # a few row groups in flight (the dataset scanner's threads vary it run to run), never a third of the file
        assert read["pool_peak"] < ROW_GROUPS / 3 * row_group_bytes, (how, read["pool_peak"], row_group_bytes)

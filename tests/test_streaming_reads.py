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
from bioray.data.streaming import row_group_tables
path, how = sys.argv[1], sys.argv[2]
if how == "default_file":
    batches = pq.ParquetFile(path).iter_batches(batch_size=64)
elif how == "row_groups_of_file":
    batches = row_group_tables(path)
else:
    batches = row_group_tables([path, path], columns=["text"])  # a list of files, one column
rows = sum(b.num_rows for b in batches)
print(json.dumps({"rows": rows, "pool_peak": pa.default_memory_pool().max_memory()}))
"""


def _read(path, how: str) -> dict:
    done = subprocess.run([sys.executable, "-c", READ, str(path), how], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def _write(path, row_groups: int) -> None:
    rng = np.random.default_rng(0)
    with pq.ParquetWriter(path, pa.schema([("text", pa.string())])) as writer:
        for _ in range(row_groups):
            texts = [rng.bytes(TEXT_BYTES // 2).hex() for _ in range(ROWS)]
            writer.write_table(pa.table({"text": texts}), row_group_size=ROWS)


def test_streaming_reads_hold_one_row_group_not_the_file(tmp_path):
    path, small = tmp_path / "big.parquet", tmp_path / "small.parquet"
    _write(path, ROW_GROUPS)
    _write(small, ROW_GROUPS // 6)
    file_bytes = path.stat().st_size
    row_group_bytes = file_bytes / ROW_GROUPS

    default = _read(path, "default_file")
    assert default["pool_peak"] >= file_bytes  # what the helpers avoid: the whole file read up front
    baseline = _read(small, "row_groups_of_file")["pool_peak"]
    for how, files in (("row_groups_of_file", 1), ("row_groups_of_files", 2)):
        read = _read(path, how)
        assert read["rows"] == files * ROW_GROUPS * ROWS
        # one row group at a time (its compressed pages, its decoded column and their buffers): the
        # same peak for a file six times the size, or two of them, and a few row groups' worth at most.
        # The helpers decode on the calling thread, so the peak does not depend on how busy the machine is.
        assert read["pool_peak"] <= 1.1 * baseline, (how, read["pool_peak"], baseline)
        assert read["pool_peak"] < 6 * row_group_bytes, (how, read["pool_peak"], row_group_bytes)

"""Memory of the corpus stages: the one cap on what a streaming Ray Data pass holds in flight, Parquet
scans that hold one row group and not one file, and handing a finished task's freed memory back to the OS."""

from __future__ import annotations

import ctypes
import gc

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

IN_FLIGHT_BYTES = 512 * 2**20  # blocks read ahead of the operators that consume them, whatever the corpus size


def capped(dataset):
    """The dataset, its executor limited to IN_FLIGHT_BYTES of object-store blocks: peak memory then
    stays the same for a corpus ten or a thousand times larger."""
    limits = dataset.context.execution_options.resource_limits
    dataset.context.execution_options.resource_limits = limits.copy(object_store_memory=IN_FLIGHT_BYTES)
    return dataset


# Pyarrow's default (pre_buffer) reads every selected column chunk of a whole file up front, even to
# iterate over its batches: a reader's memory then grows with the size of the files, which grows with
# the corpus (measured in docs/performance.md). These read one row group at a time.

def parquet_dataset(source) -> pads.Dataset:
    """A Parquet dataset (a file, a directory or a list of files) whose scans hold one row group at a time."""
    options = pads.ParquetFragmentScanOptions(pre_buffer=False)
    return pads.dataset(source, format=pads.ParquetFileFormat(default_fragment_scan_options=options))


def parquet_file(path) -> pq.ParquetFile:
    """One Parquet file whose reads (`iter_batches`, `read_row_group`) hold one row group at a time."""
    return pq.ParquetFile(path, pre_buffer=False)


def release_memory(collect_cycles: bool = True) -> None:
    """Hand the memory a finished task freed back to the OS. A Ray worker lives on after its task, idle
    or running the next one; without this its footprint is the high-water mark of everything it ran
    (pyarrow's pool and glibc's heap keep freed pages), which grows with the number of tasks. A full
    cycle collection takes ~0.2 s in a process that imported transformers: an actor calling this after
    every unit skips it (what it frees, numpy and Arrow buffers, is freed by reference counting)."""
    if collect_cycles:
        gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator returns memory its own way
        pass

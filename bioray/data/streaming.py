"""Memory of the corpus stages: the one cap on what a streaming Ray Data pass holds in flight, Parquet
reads that hold one row group and not one file, and handing a finished task's freed memory back to the OS."""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Iterable, Iterator
from pathlib import Path

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
# iterate over its batches; and its batch readers (`ParquetFile.iter_batches`, a dataset's
# `to_batches`) read row groups ahead of the consumer, holding more the more row groups a file has.
# Either way a reader's memory grows with the size of the files, which grows with the corpus
# (measured in docs/performance.md). A pass over text reads row group by row group (`row_group_tables`).

def parquet_dataset(source) -> pads.Dataset:
    """A Parquet dataset (a file, a directory or a list of files) without pre-buffering: for reads of
    a few columns or filtered rows (keys); stream text with `row_group_tables`."""
    options = pads.ParquetFragmentScanOptions(pre_buffer=False)
    return pads.dataset(source, format=pads.ParquetFileFormat(default_fragment_scan_options=options))


def read_shards(directory, columns: list[str]):
    """bioray's own Parquet shards as a Ray Dataset of `columns`, read by Ray Data's file-based reader.

    Ray 2.60's default Parquet reader (DataSourceV2) first lists row groups on a pool of up to 32
    FooterReader actors, a new Python process each, for every read: on a few cores that is most of a
    short pretraining's start-up (docs/performance.md). What it buys (row-group statistics for
    predicate push-down) is nothing for shards bioray wrote and reads whole."""
    import ray

    context = ray.data.DataContext.get_current()
    saved, context.use_datasource_v2 = context.use_datasource_v2, False  # read_parquet picks its reader here
    try:
        return ray.data.read_parquet(str(directory), columns=columns)
    finally:
        context.use_datasource_v2 = saved


def parquet_file(path) -> pq.ParquetFile:
    """One Parquet file whose `read_row_group` reads that row group alone."""
    return pq.ParquetFile(path, pre_buffer=False)


def parquet_files(path: Path) -> list[Path]:
    """The Parquet file itself, or every Parquet file under the directory that readers see (names
    starting with '.' or '_' are temporary or metadata files)."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.parquet")
                  if not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))


def row_group_tables(source, columns: Iterable[str] | None = None) -> Iterator[pa.Table]:
    """Every row group of a file, a directory or a list of Parquet files, in order, one table at a time:
    the reader holds one row group (the writers bound its rows and text), whatever the files' size.
    Decoded on the calling thread: each reading task or actor has its CPU, and Arrow's pool threads
    would free their buffers after the caller moved on, so the peak would depend on scheduling."""
    for path in source if isinstance(source, (list, tuple)) else parquet_files(source):
        file = parquet_file(path)
        for index in range(file.metadata.num_row_groups):
            yield file.read_row_group(index, columns=None if columns is None else list(columns), use_threads=False)


def release_memory(collect_cycles: bool = True) -> None:
    """Hand the memory a finished task freed back to the OS. A Ray worker lives on after its task, idle
    or running the next one; without this its footprint is the high-water mark of everything it ran
    (pyarrow's pool and glibc's heap keep freed pages), which grows with the number of tasks. A full
    cycle collection is slow in a process that imported transformers (docs/performance.md, Measured
    choices): an actor calling this after every unit skips it (what it frees, numpy and Arrow buffers,
    is freed by reference counting)."""
    if collect_cycles:
        gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator returns memory its own way
        pass

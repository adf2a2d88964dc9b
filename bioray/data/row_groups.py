"""A documents Parquet as units of work, one per row group, that Ray Data actors read themselves.

The actors' dataset is the list of units, not the documents: no read task stands between the files
and the actors (on a cluster whose cores the actors fill, a read task can wait for a CPU forever),
and no document text passes through the object store. A unit always holds the same documents, so the
batches cut from it, and the shards named after them, are the same in every run and every retry.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.data import ActorPoolStrategy

from bioray.data.streaming import parquet_file, parquet_files

# A row group of every documents file ingest writes, the tokenize and tag actors' unit: at most this
# many rows and this much text. Bounded by bytes too: full-text articles are a hundred times longer
# than abstracts, and a unit of 4,096 of them would hold 150 MB of text in one actor.
ROW_GROUP_ROWS = 4096
ROW_GROUP_TEXT_BYTES = 8 * 2**20

ACTORS_START_S = 600  # for a pool's actors to load (a model, a tokenizer) on a busy or autoscaling cluster
TEXT_COLUMNS = ["doc_id", "source", "text", "sentence_starts"]  # what tokenizing or tagging a document reads


def temporary_path(target: Path) -> Path:
    """Where a writer writes `target` before renaming it into place: a dot name with the writer's
    process id, which `parquet_files` skips, so a reader never sees a partial file and two attempts
    of one task never write the same temporary file."""
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def row_group_units(path: Path) -> list[dict]:
    """One unit per row group: its file, its index and its rows (read from the footers only)."""
    units = []
    for file in parquet_files(path):
        metadata = pq.read_metadata(file)
        units += [{"path": str(file), "row_group": group, "rows": metadata.row_group(group).num_rows}
                  for group in range(metadata.num_row_groups) if metadata.row_group(group).num_rows]
    return units


def units_dataset(units: list[dict]) -> ray.data.Dataset:
    """The units as a Ray dataset, one block each, so that idle actors take them one at a time. Every
    actor of the pool is up before the first unit is handed out: all nodes then share even a small
    corpus (the first actors would otherwise finish it while the others load), and a pool the cluster
    cannot place fails with Ray's "Timed out while starting actors" instead of waiting forever."""
    dataset = ray.data.from_items(units, override_num_blocks=max(1, len(units)))
    dataset.context.wait_for_min_actors_s = ACTORS_START_S
    return dataset


def read_unit(unit: dict, columns: list[str] = TEXT_COLUMNS, only_new: bool = False) -> pa.Table:
    """The unit's documents (only those new in the last ingest if asked)."""
    file = parquet_file(unit["path"])
    table = file.read_row_group(int(unit["row_group"]), columns=[*columns, *(["is_new"] if only_new else [])])
    if only_new:
        table = table.filter(table.column("is_new")).drop_columns(["is_new"])
    return table


def batches(table: pa.Table, rows: int, text_bytes: int | None = None) -> Iterator[pa.Table]:
    """The table in consecutive slices (zero-copy) of at most `rows` rows and, if the table has a text
    column, at most `text_bytes` of text (a longer document is a slice of its own)."""
    if text_bytes is None or "text" not in table.column_names or not table.num_rows:
        for start in range(0, table.num_rows, rows):
            yield table.slice(start, rows)
        return
    ends = np.cumsum(pc.binary_length(table.column("text")).fill_null(0).to_numpy(zero_copy_only=False))
    start = 0
    while start < table.num_rows:
        before = ends[start - 1] if start else 0
        end = min(start + rows, int(np.searchsorted(ends, before + text_bytes, side="right")))
        end = max(end, start + 1)
        yield table.slice(start, end - start)
        start = end


def coalesced(tables: Iterable[pa.Table], rows: int, text_bytes: int) -> Iterator[pa.Table]:
    """The stream's rows, in order, regrouped by `batches` into tables as full as the bounds allow: a
    writer fed small tables (one bucket's share of a parse chunk) still writes full row groups, so
    the units cut from them are few and large (a unit costs the actors a scheduling round trip)."""
    pending: list[pa.Table] = []
    held_rows = held_text = 0
    for table in tables:
        if not table.num_rows:
            continue
        pending.append(table)
        held_rows, held_text = held_rows + table.num_rows, held_text + _text_bytes(table)
        if held_rows >= rows or held_text >= text_bytes:
            *full, rest = batches(pa.concat_tables(pending), rows, text_bytes)
            yield from full
            pending, held_rows, held_text = [rest], rest.num_rows, _text_bytes(rest)
    if pending:
        yield from batches(pa.concat_tables(pending), rows, text_bytes)


def _text_bytes(table: pa.Table) -> int:
    if "text" not in table.column_names:
        return 0
    return pc.sum(pc.binary_length(table.column("text"))).as_py() or 0


def actor_pool(actors: int) -> ActorPoolStrategy:
    """Actors of one whole CPU each (map with num_cpus=1), no more than the cluster has: an actor that
    can never be placed would hold the pool's start, and a fraction of a CPU left on every node runs
    nothing. One unit at a time per actor: a unit is seconds to minutes of work, and units queued at
    the actors beside the driver (where the units' blocks live) would leave other nodes idle."""
    size = max(1, min(actors, int(ray.cluster_resources().get("CPU", 1.0))))
    return ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1)

"""Ingest stage: raw files -> deduplicated, sentence-split documents Parquet, with Ray.

No state per document lives on the driver: deduplication is hash-partitioned, by a sort-based
shuffle. The documents are split into `buckets` by a hash of their id, so that every version and
deletion of one document lands in the same bucket, and each bucket is resolved by a Ray task:

1. parse: each file is read by one Ray task, its records streamed, 16 MiB of text at a time, into
   ONE Parquet file under `_parsed/`, sorted by bucket, whose row groups never hold two buckets: the
   footer's statistics of the `bucket` column are the index a bucket task finds its row groups by
   (what cannot be parsed is quarantined, in bucket -1, and the rest of the run completes). An earlier
   output's `latest/` files are re-sorted the same way into `_earlier/`. Nothing passes through the
   object store.
2. latest: per bucket, the latest version of each document, deletions applied -> `latest/`; the
   candidates for text de-duplication go to one hand-off file per bucket, sorted by text bucket.
3. unique texts: per text bucket, one document per normalised text (the smallest id) -> one file
   per text bucket, sorted by document bucket.
4. documents: per bucket, the kept documents with their sentence spans -> `documents/`.

Scratch files: one per input file (and per earlier `latest/` file) plus two per bucket, never one
per (file, bucket). A bucket task reads only its row groups of each file (footer, then those groups).

Keys are fixed-width: a document id and a normalised text are each a 128-bit BLAKE2b hash, held as
two int64 columns. Two different ids (or texts) sharing a hash would be taken as one document (or
duplicates): among n keys the chance of any such pair is about n^2 / 2^129, 1.5e-21 at 10^9
documents; accepted. Among documents of equal text hash, the smallest id (the id itself, not its
hash) is kept. A task holds one bucket's keys (about 70 bytes a document, plus the doc id of
de-duplication candidates as Arrow strings) and one row group of text, and hands what it freed back
to the OS when it ends (a Ray worker outlives its tasks).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from bioray.config import IngestConfig, SourceConfig
from bioray.corpus.files import list_source_files
from bioray.corpus.readers import read_documents
from bioray.corpus.records import Document, Quarantined
from bioray.corpus.sentences import sentence_spans
from bioray.data.row_groups import ROW_GROUP_ROWS, ROW_GROUP_TEXT_BYTES, coalesced, temporary_path
from bioray.data.streaming import parquet_file, release_memory, row_group_tables

log = logging.getLogger(__name__)

MIN_BUCKETS = 16  # enough tasks to keep a few nodes' cores busy on a small corpus
BUCKET_INPUT_BYTES = 256 * 2**20  # input per bucket: its keys stay a few tens of MB in one task
QUARANTINE_BUCKET = -1
CHUNK_TEXT_BYTES = 16 * 2**20  # text a parse task holds at once (characters, about bytes)


@dataclass(frozen=True)
class SourceFile:
    """One input file, as handed to its parse task: its path, its rank in publication order, its source."""

    path: str
    rank: int
    source: SourceConfig


def _read_file(item: SourceFile, buckets: int) -> Iterator[dict]:
    """The parsed rows (PARSED_SCHEMA) of one file, streamed, with a quarantine row for each record (or rest
    of file) that failed. Whatever parsed before an error is kept: a truncated .gz loses only its unreadable tail.
    """
    source, documents, records = item.source, 0, 0
    try:
        for record in read_documents(Path(item.path), source.format, source.name, source.text_field, source.id_field,
                                     source.documents):
            records += 1
            if isinstance(record, Quarantined):
                yield _quarantine_row(item, record)
                continue
            if source.max_docs and documents >= source.max_docs:
                break
            yield _row(item, record, documents, buckets)
            documents += 1
    except Exception as exc:  # unreadable from here on (truncated gzip, malformed XML, not XML at all)
        where = f"after record {documents}" if documents else "start of file"
        yield _quarantine_row(item, Quarantined(where, f"{type(exc).__name__}: {exc}"))
        return
    if not records:  # reported, so that a file emptied by a failed copy does not pass unnoticed
        yield _quarantine_row(item, Quarantined("whole file", "no records: the file is empty"))


def _row(item: SourceFile, document: Document, record: int, buckets: int | None) -> dict:
    """A parsed row (PARSED_SCHEMA): the document, its file, its de-duplication keys, its bucket (None:
    quarantined), no quarantine reason."""
    doc_hi, doc_lo = key128(document.doc_id)
    text_hi, text_lo = text_key(document.text)
    bucket = QUARANTINE_BUCKET if buckets is None else int(bucket_of(doc_hi, buckets))
    return {**vars(document), "file": item.path, "file_rank": item.rank, "record": record, "location": "", "error": "",
            "doc_key_hi": doc_hi, "doc_key_lo": doc_lo, "text_key_hi": text_hi, "text_key_lo": text_lo,
            "chars": len(document.text), "bucket": bucket}


def _quarantine_row(item: SourceFile, bad: Quarantined) -> dict:
    return {**_row(item, Document(item.source.name, "", 0, ""), -1, None), **vars(bad)}


def key128(value: str) -> tuple[int, int]:
    """A 128-bit BLAKE2b hash of value as two signed 64-bit integers (high, low): a fixed-width key."""
    digest = hashlib.blake2b(value.encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little", signed=True), int.from_bytes(digest[8:], "little", signed=True)


def text_key(text: str) -> tuple[int, int]:
    """Key of the normalised text (case and whitespace folded): equal for exact duplicates."""
    return key128(" ".join(text.lower().split())) if text else (0, 0)


def bucket_of(key_hi, buckets: int):
    """The bucket (0..buckets-1) of a key's high half, an int or an int64 array: the same in every process."""
    return np.asarray(key_hi, dtype=np.int64).view(np.uint64) % np.uint64(buckets)


def seeded_slice(doc_ids: list[str], fraction: float, seed: int, purpose: str) -> np.ndarray:
    """Which documents fall in a seeded slice of about `fraction` of the corpus (the held-out documents,
    the vocabulary's sample): a hash of (purpose, seed, document id), so the same documents whichever
    file, row group, batch, worker or run sees them; another purpose or seed, an independent slice."""
    if fraction <= 0:
        return np.zeros(len(doc_ids), dtype=bool)
    draws = [int.from_bytes(hashlib.sha256(f"{purpose}:{seed}:{d}".encode()).digest()[:8], "little") / 2**64
             for d in doc_ids]
    return np.array(draws, dtype=np.float64) < fraction


KEYS = [("doc_key_hi", pa.int64()), ("doc_key_lo", pa.int64()), ("text_key_hi", pa.int64()),
        ("text_key_lo", pa.int64())]
KEY_COLUMNS = ["doc_key_hi", "doc_key_lo", "file_rank", "record", "version", "deleted", "text_key_hi", "text_key_lo",
               "chars"]
LATEST_DROPS = ["error", "location", "file"]  # parse bookkeeping, not part of latest/
DOCUMENT_DROPS = ["deleted", "file_rank", "record", *(name for name, _ in KEYS), "chars"]  # dedup bookkeeping
ARROW_TYPES = {"str": pa.string(), "int": pa.int64(), "bool": pa.bool_()}  # of Document's annotations
DOCUMENT_COLUMNS = [(f.name, ARROW_TYPES[f.type]) for f in fields(Document)]  # what a reader parsed
PARSED_SCHEMA = pa.schema([*DOCUMENT_COLUMNS, ("file", pa.string()), ("file_rank", pa.int64()),
                           ("record", pa.int64()), *KEYS, ("chars", pa.int64()),
                           ("location", pa.string()), ("error", pa.string()), ("bucket", pa.int64())])
DOCUMENT_SCHEMA = pa.schema([*(c for c in DOCUMENT_COLUMNS if c[0] != "deleted"), ("is_new", pa.bool_()),
                             ("sentence_starts", pa.list_(pa.int64())), ("sentence_ends", pa.list_(pa.int64()))])


def _record_keys(table: pa.Table) -> np.ndarray:
    """One int64 per parsed record: its file's rank and its number in that file."""
    return table.column("file_rank").to_numpy() << 32 | table.column("record").to_numpy()


def _group_starts(*columns: np.ndarray) -> np.ndarray:
    """For rows sorted by these columns: True where a row starts a new group of equal values."""
    starts = np.zeros(len(columns[0]), dtype=bool)
    starts[:1] = True
    for column in columns:
        starts[1:] |= column[1:] != column[:-1]
    return starts


def latest_versions(keys: pa.Table) -> np.ndarray:
    """Row indices (into keys) of the latest version of each document, deletions applied: per doc key,
    the record of the latest file, then the highest version, then the later record; a deletion removes
    the document."""
    hi, lo = keys.column("doc_key_hi").to_numpy(), keys.column("doc_key_lo").to_numpy()
    order = np.lexsort((keys.column("record").to_numpy(), keys.column("version").to_numpy(),
                        keys.column("file_rank").to_numpy(), lo, hi))
    last = np.append(_group_starts(hi[order], lo[order])[1:], True)  # the row before each group start
    latest = order[last]
    return latest[~keys.column("deleted").to_numpy(zero_copy_only=False)[latest]]


def unique_texts(candidates: pa.Table) -> pa.Table:
    """One document per normalised text: the smallest doc id (compared only among equal text keys)."""
    ordered = candidates.sort_by([("text_key_hi", "ascending"), ("text_key_lo", "ascending"),
                                  ("doc_id", "ascending")])
    first = _group_starts(ordered.column("text_key_hi").to_numpy(), ordered.column("text_key_lo").to_numpy())
    return ordered.filter(pa.array(first))


def _only(batch: pa.Table, keys: np.ndarray) -> pa.Table:
    """The rows of batch whose record key is in keys (sorted)."""
    if not len(keys):
        return batch.slice(0, 0)
    record_keys = _record_keys(batch)
    found = keys[np.minimum(np.searchsorted(keys, record_keys), len(keys) - 1)] == record_keys
    return batch.filter(pa.array(found))


def _files(directory: Path) -> list[str]:
    return sorted(str(p) for p in directory.glob("*.parquet")) if directory.is_dir() else []


# -- files sorted by a key, one key value per row group ------------------------------------------------

def _row_group_keys(metadata: pq.FileMetaData, key: str) -> np.ndarray:
    """The value of key in each row group of a file written by `_write_atomically(..., key=key)`: from the
    footer's statistics, the index a reader finds its row groups by without reading any rows."""
    column = metadata.schema.names.index(key)
    values = []
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max or stats.min != stats.max:
            raise ValueError(f"ingest: a row group of a scratch file holds more than one {key}: not written by "
                             f"this ingest, or corrupted")
        values.append(stats.min)
    return np.array(values, dtype=np.int64)


def _tables_of(paths: Iterable[str], value: int, columns: list[str], key: str = "bucket") -> Iterator[pa.Table]:
    """The rows of these files whose key is value, one row group at a time (their footers say which)."""
    for path in paths:
        file = parquet_file(path)
        for group in np.flatnonzero(_row_group_keys(file.metadata, key) == value):
            yield file.read_row_group(int(group), columns=columns, use_threads=False)


def _table_of(paths: Iterable[str], value: int, columns: list[str], key: str = "bucket") -> pa.Table | None:
    """The rows of these files whose key is value, as one table (keys: a few columns); None when none."""
    tables = list(_tables_of(paths, value, columns, key))
    return pa.concat_tables(tables) if tables else None


def _by_key(table: pa.Table, key: str) -> Iterator[pa.Table]:
    """The table sorted by key, as one slice (zero-copy) per key value."""
    values = table.column(key).to_numpy()
    order = np.argsort(values, kind="stable")
    table, values = table.take(order), values[order]
    starts = np.flatnonzero(_group_starts(values))
    for start, end in zip(starts, [*starts[1:], len(values)]):
        yield table.slice(start, end - start)


def _regrouped(tables: Iterable[pa.Table], key: str | None) -> Iterator[pa.Table]:
    """`coalesced` tables: full row groups, each of one key value when a key is given (the tables then
    come in key order, each of one value)."""
    tables = (t for t in tables if t.num_rows)
    if key is None:
        yield from coalesced(tables, ROW_GROUP_ROWS, ROW_GROUP_TEXT_BYTES)
        return
    for _, same in itertools.groupby(tables, key=lambda t: t.column(key)[0].as_py()):
        yield from coalesced(same, ROW_GROUP_ROWS, ROW_GROUP_TEXT_BYTES)


def _write_atomically(tables: Iterable[pa.Table], target: Path, schema: pa.Schema | None = None,
                      key: str | None = None) -> int:
    """Stream tables into one Parquet file, written under a temporary name then renamed (a retried
    task rewrites it whole); rows written. With no rows and no schema, no file. The rows are regrouped
    into full row groups of ROW_GROUP_ROWS rows or ROW_GROUP_TEXT_BYTES of text (never two values of
    key in one row group, when a key is given)."""
    temporary, rows, writer = temporary_path(target), 0, None
    try:
        for group in _regrouped(tables, key):
            if writer is None:  # a scratch file's statistics: of its key alone (the index), not of the text
                writer = pq.ParquetWriter(temporary, group.schema, write_statistics=[key] if key else True)
            writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
            rows += group.num_rows
        if writer is None and schema is not None:
            writer = pq.ParquetWriter(temporary, schema)
        if writer is not None:
            writer.close()
            os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return rows


def _write_sorted(tables: Iterable[pa.Table], target: Path, key: str = "bucket") -> None:
    """Stream tables into one Parquet file sorted by key, one key value per row group, holding at most two
    tables (the first two: whether there is a second decides if a scratch file is needed): each table is
    sorted and written as a run to a scratch file, then the runs are merged key by key, a row group at a
    time. A stream of one table is sorted in memory and written directly."""
    tables = iter(tables)
    first, second = next(tables, None), next(tables, None)
    if second is None:
        _write_atomically(_by_key(first, key) if first is not None else [], target, key=key)
        return
    runs = temporary_path(target.with_name(target.name + ".runs"))
    try:
        with pq.ParquetWriter(runs, first.schema, write_statistics=[key]) as writer:
            for table in itertools.chain([first, second], tables):
                for part in _by_key(table, key):  # one run per table and key value
                    writer.write_table(part, row_group_size=len(part))
        file = parquet_file(runs)
        run_keys = _row_group_keys(file.metadata, key)
        merged = (file.read_row_group(int(group), use_threads=False)
                  for group in np.argsort(run_keys, kind="stable"))
        _write_atomically(merged, target, key=key)
    finally:
        runs.unlink(missing_ok=True)


def _chunks(rows: Iterator[dict], schema: pa.Schema) -> Iterator[pa.Table]:
    """Rows as tables of ROW_GROUP_ROWS rows or CHUNK_TEXT_BYTES of text, whichever comes first: full-text
    articles are a hundred times longer than abstracts, and a task holds one chunk at a time."""
    chunk, chars = [], 0
    for row in rows:
        chunk.append(row)
        chars += len(row["text"])
        if len(chunk) == ROW_GROUP_ROWS or chars >= CHUNK_TEXT_BYTES:
            yield pa.Table.from_pylist(chunk, schema=schema)
            chunk, chars = [], 0
    if chunk:
        yield pa.Table.from_pylist(chunk, schema=schema)


# -- the four steps ------------------------------------------------------------------------------------

def _parse_file(item: SourceFile, buckets: int, parsed_dir: str) -> None:
    """Step 1 for one input file: its records, and a quarantine row for each that failed, into one
    Parquet file sorted by bucket, named after the file's rank (a retried task rewrites the same file)."""
    _write_sorted(_chunks(_read_file(item, buckets), PARSED_SCHEMA), Path(parsed_dir) / f"{item.rank:08d}.parquet")


def _rebucket(latest_file: str, earlier_dir: str, buckets: int) -> None:
    """Step 1 for one file of an earlier output's latest/: its rows sorted into this run's buckets (the
    keys are in the file: nothing is hashed again)."""
    tables = (table.append_column("bucket", pa.array(bucket_of(table.column("doc_key_hi").to_numpy(), buckets)
                                                     .astype(np.int64)))
              for table in row_group_tables(latest_file))
    _write_sorted(tables, Path(earlier_dir) / f"{Path(latest_file).stem}.parquet")


def _resolve_bucket(bucket: int, sources: list[str], latest_dir: str, handoff_dir: str, buckets: int,
                    min_chars: int) -> int:
    """Step 2 for one bucket: its latest documents to latest/, and the de-duplication candidates
    (long enough) to the hand-off file, sorted by text bucket. Returns the number of latest documents."""
    keys = _table_of(sources, bucket, ["doc_id", *KEY_COLUMNS])
    if keys is None:
        return 0
    latest = latest_versions(keys)
    candidates = keys.take(latest[keys.column("chars").to_numpy()[latest] >= min_chars])
    text_buckets = bucket_of(candidates.column("text_key_hi").to_numpy(), buckets).astype(np.int64)
    handoff = candidates.select(["doc_id", "text_key_hi", "text_key_lo", "file_rank", "record"]).append_column(
        "text_bucket", pa.array(text_buckets)).append_column("bucket", pa.array(np.full(len(text_buckets), bucket)))
    _write_atomically(_by_key(handoff, "text_bucket"), Path(handoff_dir) / f"{bucket:05d}.parquet",
                      key="text_bucket")
    record_keys = np.sort(_record_keys(keys.take(latest)))
    del keys, candidates, handoff
    # parsed files and an earlier latest/'s re-bucketed ones hold these columns, in this order
    names = [n for n in PARSED_SCHEMA.names if n not in LATEST_DROPS + ["bucket"]]
    rows = (_only(table.replace_schema_metadata(None), record_keys)  # one row group at a time
            for table in _tables_of(sources, bucket, names))
    return _write_atomically(rows, Path(latest_dir) / f"part-{bucket:05d}.parquet")


def _unique_text_bucket(text_bucket: int, handoff_dir: str, kept_dir: str) -> int:
    """Step 3 for one text bucket: the kept documents' record keys, sorted by document bucket."""
    candidates = _table_of(_files(Path(handoff_dir)), text_bucket,
                           ["doc_id", "text_key_hi", "text_key_lo", "file_rank", "record", "bucket"], key="text_bucket")
    if candidates is None:
        return 0
    kept = unique_texts(candidates).select(["bucket", "file_rank", "record"])
    _write_atomically(_by_key(kept, "bucket"), Path(kept_dir) / f"{text_bucket:05d}.parquet", key="bucket")
    return kept.num_rows


def _documents_of_bucket(bucket: int, latest_file: str, kept_dir: str, documents_dir: str,
                         first_new_rank: int) -> int:
    """Step 4 for one bucket: its kept documents with their sentence spans."""
    if not Path(latest_file).is_file():
        return 0
    kept = _table_of(_files(Path(kept_dir)), bucket, ["file_rank", "record"])
    keys = np.sort(_record_keys(kept)) if kept is not None else np.zeros(0, np.int64)

    def documents() -> Iterator[pa.Table]:
        for table in row_group_tables(latest_file):
            table = _only(table, keys)
            if not table.num_rows:
                continue
            frame = table.to_pandas()
            frame["is_new"] = frame["file_rank"] >= first_new_rank  # from a file this run parsed
            spans = [sentence_spans(text) for text in frame["text"]]
            frame["sentence_starts"] = [[s for s, _ in doc] for doc in spans]
            frame["sentence_ends"] = [[e for _, e in doc] for doc in spans]
            yield pa.Table.from_pandas(frame.drop(columns=DOCUMENT_DROPS), schema=DOCUMENT_SCHEMA,
                                       preserve_index=False)

    return _write_atomically(documents(), Path(documents_dir) / f"part-{bucket:05d}.parquet", DOCUMENT_SCHEMA)


def document_counts(documents_dir: Path, only_new: bool = False) -> tuple[dict[str, int], int]:
    """Documents per source and total sentences (of the new documents only), streamed from the Parquet."""
    per_source: dict[str, int] = {}
    sentences = 0
    # one row group at a time: the driver holds the same few MB whatever the corpus size
    for batch in row_group_tables(documents_dir, columns=["source", "sentence_starts", "is_new"]):
        if only_new:
            batch = batch.filter(batch.column("is_new"))
        for item in pc.value_counts(batch.column("source")).to_pylist():
            per_source[item["values"]] = per_source.get(item["values"], 0) + item["counts"]
        sentences += pc.sum(pc.list_value_length(batch.column("sentence_starts"))).as_py() or 0
    return per_source, sentences


def file_items(ingest: IngestConfig, data_root: Path) -> list[SourceFile]:
    """Every input file with its source settings and its rank in publication order."""
    files = [(str(path), source) for source in ingest.sources
             for path in list_source_files((Path(data_root) / source.path).resolve(), source.format)]
    return [SourceFile(path, rank, source) for rank, (path, source) in enumerate(files)]


def reusable_files(items: list[SourceFile], previous: Path | None) -> int:
    """How many leading input files an earlier ingest output already holds, unchanged (0 = none).

    Incremental ingest is exact only when every earlier file is still there, unchanged, and all
    new files come after them in publication order (NLM's update files do): then applying the new
    files to the earlier latest-version table gives what a full rebuild gives.
    """
    if previous is None or not (previous / "manifest.json").is_file():
        return 0
    old = json.loads((previous / "manifest.json").read_text())["files"]
    current = [_fingerprint(item) for item in items[: len(old)]]
    return len(old) if current == old else 0


def _fingerprint(item: SourceFile) -> dict:
    stat = Path(item.path).stat()
    return {"path": item.path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _on_node(step, *args) -> str:
    """Run one step for one file or bucket; the id of the node it ran on (how many nodes shared the work)."""
    step(*args)
    release_memory()
    return ray.get_runtime_context().get_node_id()


def _run_step(number: int, name: str, tasks: list) -> set[str]:
    """Wait for one step's tasks; the nodes they ran on. Logs the step's wall time."""
    started = time.perf_counter()
    nodes = set(ray.get(tasks))
    log.info("ingest: step %d/4 (%s): %d task(s) in %.1f s", number, name, len(tasks), time.perf_counter() - started)
    return nodes


def bucket_count(items: list[SourceFile]) -> int:
    """Buckets for these input files: more as the input grows, so that a bucket's keys stay small;
    fixed by the files alone, so the same input gives the same output files on any cluster."""
    total = sum(Path(item.path).stat().st_size for item in items)
    return max(MIN_BUCKETS, math.ceil(total / BUCKET_INPUT_BYTES))


def _quarantined(parsed_files: list[str]) -> list[dict]:
    """The quarantine rows of every parsed file (its bucket -1 row groups), in file order."""
    table = _table_of(parsed_files, QUARANTINE_BUCKET, ["file", "location", "error"])
    return table.to_pylist() if table is not None else []


def _rows_in_buckets(parsed_files: list[str]) -> int:
    """Rows of the parsed files outside the quarantine bucket, from their footers."""
    rows = 0
    for path in parsed_files:
        metadata = pq.read_metadata(path)
        keys = _row_group_keys(metadata, "bucket")
        rows += sum(metadata.row_group(int(g)).num_rows for g in np.flatnonzero(keys != QUARANTINE_BUCKET))
    return rows


def run_ingest(ingest: IngestConfig, data_root: Path, output: Path, earlier_outputs: list[Path] = ()) -> dict:
    """Parse the input files into documents; only the new ones when an earlier output holds the rest.

    Writes `latest/` (one row per document id: latest version, deletions applied, before text
    de-duplication; what the next incremental run starts from), `documents/` (`is_new`: the document
    comes from a file parsed in this run, not one reused from the earlier output), `quarantine.json`
    and `manifest.json`.
    """
    items = file_items(ingest, data_root)
    if not items:
        raise ValueError(f"ingest: no input files under {data_root} for sources {[s.path for s in ingest.sources]}")
    reused, previous = max(((reusable_files(items, p), p) for p in earlier_outputs), default=(0, None))
    new_items = items[reused:]
    buckets = bucket_count(items)
    log.info("ingest: %d file(s) to parse, %d reused from %s; %d buckets", len(new_items), reused,
             previous if reused else "-", buckets)

    # 1. parse (and re-sort the earlier latest/): one Ray task per file, nothing through the object store
    parsed, earlier = output / "_parsed", output / "_earlier"
    steps = {name: output / name for name in ("latest", "_handoff", "_kept", "documents")}
    for directory in (parsed, earlier, *steps.values()):
        directory.mkdir(parents=True, exist_ok=True)
    task = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_on_node)  # every node's cores and disks
    nodes = _run_step(1, "parse", [task.remote(_parse_file, item, buckets, str(parsed)) for item in new_items]
                      + [task.remote(_rebucket, f, str(earlier), buckets)
                         for f in (_files(previous / "latest") if reused else [])])
    errors = _quarantined(_files(parsed))
    for error in errors:
        log.warning("quarantined %s (%s): %s", error["file"], error["location"], error["error"])
    (output / "quarantine.json").write_text(json.dumps(errors, indent=2))
    parsed_count = _rows_in_buckets(_files(parsed))

    # 2-4. one Ray task per bucket and step; each reads its row groups of every scratch file, writes one file
    sources = _files(parsed) + _files(earlier)
    nodes |= _run_step(2, "latest versions", [task.remote(
        _resolve_bucket, b, sources, str(steps["latest"]), str(steps["_handoff"]), buckets, ingest.min_chars)
        for b in range(buckets)])
    nodes |= _run_step(3, "unique texts", [task.remote(_unique_text_bucket, b, str(steps["_handoff"]),
                                                       str(steps["_kept"])) for b in range(buckets)])
    nodes |= _run_step(4, "documents", [task.remote(
        _documents_of_bucket, b, str(steps["latest"] / f"part-{b:05d}.parquet"), str(steps["_kept"]),
        str(steps["documents"]), reused) for b in range(buckets)])
    scratch = (parsed, earlier, steps["_handoff"], steps["_kept"])
    scratch_files = sum(len(_files(directory)) for directory in scratch)
    for directory in scratch:
        shutil.rmtree(directory, ignore_errors=True)
    (output / "manifest.json").write_text(json.dumps({"files": [_fingerprint(i) for i in items]}, indent=2))

    per_source, sentences = document_counts(output / "documents")
    new_documents = sum(document_counts(output / "documents", only_new=True)[0].values())
    metrics = {"ingest/files": len(items), "ingest/files_parsed": len(new_items), "ingest/files_reused": reused,
               "ingest/quarantined_records": len(errors), "ingest/quarantined_files": len({e["file"] for e in errors}),
               "ingest/records_parsed": parsed_count, "ingest/documents": sum(per_source.values()),
               "ingest/documents_new": new_documents, "ingest/sentences": sentences, "ingest/buckets": buckets,
               "ingest/nodes": len(nodes), "ingest/scratch_files": scratch_files}
    metrics.update({f"ingest/documents_{name}": count for name, count in per_source.items()})
    return metrics

"""Ingest stage: raw files -> deduplicated, sentence-split documents Parquet, with Ray.

No state per document lives on the driver: deduplication is hash-partitioned. The documents are
split into `buckets` by a hash of their id, so that every version and deletion of one document lands
in the same bucket, and each bucket is resolved by a Ray task that reads only its own files:

1. parse: each file is read by one Ray task, its records streamed, 16 MiB of text at a time, into
   one Parquet file per bucket under `_parsed/bucket=<b>/` (what cannot be parsed is quarantined,
   under `bucket=-1`, and the rest of the run completes); an earlier output's `latest/` is
   re-bucketed the same way. Nothing passes through the object store.
2. latest: per bucket, the latest version of each document, deletions applied -> `latest/`; the
   candidates for text de-duplication go on, re-partitioned by a hash of their text.
3. unique texts: per text bucket, one document per normalised text (the smallest id).
4. documents: per bucket, the kept documents with their sentence spans -> `documents/`.

A task holds the keys of one bucket (a few hundred bytes a document) and one row group of text (it
reads row group by row group, writes full row groups), and hands what it freed back to the OS when
it ends (a Ray worker outlives its tasks). The number of buckets grows with the input above 4 GiB;
below, a bucket's keys grow with the corpus (measured in docs/performance.md).
"""

from __future__ import annotations

import hashlib
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
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from bioray.config import IngestConfig, SourceConfig
from bioray.corpus.files import list_source_files
from bioray.corpus.readers import read_documents
from bioray.corpus.records import Document, Quarantined
from bioray.corpus.sentences import sentence_spans
from bioray.data.row_groups import ROW_GROUP_ROWS, ROW_GROUP_TEXT_BYTES, batches, coalesced, temporary_path
from bioray.data.streaming import parquet_dataset, release_memory, row_group_tables

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
            yield _row(item, record, documents, bucket_of(record.doc_id, buckets))
            documents += 1
    except Exception as exc:  # unreadable from here on (truncated gzip, malformed XML, not XML at all)
        where = f"after record {documents}" if documents else "start of file"
        yield _quarantine_row(item, Quarantined(where, f"{type(exc).__name__}: {exc}"))
        return
    if not records:  # reported, so that a file emptied by a failed copy does not pass unnoticed
        yield _quarantine_row(item, Quarantined("whole file", "no records: the file is empty"))


def _row(item: SourceFile, document: Document, record: int, bucket: int) -> dict:
    """A parsed row (PARSED_SCHEMA): the document, its file, its de-duplication keys, no quarantine reason."""
    return {**vars(document), "file": item.path, "file_rank": item.rank, "record": record, "location": "", "error": "",
            "text_hash": text_hash(document.text), "chars": len(document.text), "bucket": bucket}


def _quarantine_row(item: SourceFile, bad: Quarantined) -> dict:
    return {**_row(item, Document(item.source.name, "", 0, ""), -1, QUARANTINE_BUCKET), **vars(bad)}


def bucket_of(value: str, buckets: int) -> int:
    """A stable hash of value (a document id or text hash) into 0..buckets-1, the same in every process."""
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little") % buckets


def seeded_slice(doc_ids: list[str], fraction: float, seed: int, purpose: str) -> np.ndarray:
    """Which documents fall in a seeded slice of about `fraction` of the corpus (the held-out documents,
    the vocabulary's sample): a hash of (purpose, seed, document id), so the same documents whichever
    file, row group, batch, worker or run sees them; another purpose or seed, an independent slice."""
    if fraction <= 0:
        return np.zeros(len(doc_ids), dtype=bool)
    draws = [int.from_bytes(hashlib.sha256(f"{purpose}:{seed}:{d}".encode()).digest()[:8], "little") / 2**64
             for d in doc_ids]
    return np.array(draws, dtype=np.float64) < fraction


def text_hash(text: str) -> str:
    """Hash of the normalised text (case and whitespace folded): equal for exact duplicates."""
    return hashlib.sha1(" ".join(text.lower().split()).encode()).hexdigest() if text else ""


KEY_COLUMNS = ["doc_id", "file_rank", "record", "version", "deleted", "text_hash", "chars"]
LATEST_DROPS = ["error", "location", "file"]  # parse bookkeeping, not part of latest/
DOCUMENT_DROPS = ["deleted", "file_rank", "record", "text_hash", "chars"]  # dedup bookkeeping
ARROW_TYPES = {"str": pa.string(), "int": pa.int64(), "bool": pa.bool_()}  # of Document's annotations
DOCUMENT_COLUMNS = [(f.name, ARROW_TYPES[f.type]) for f in fields(Document)]  # what a reader parsed
HANDOFF_SCHEMA = pa.schema([("doc_id", pa.string()), ("text_hash", pa.string()), ("file_rank", pa.int64()),
                            ("record", pa.int64()), ("text_bucket", pa.int64()), ("bucket", pa.int64())])
PARSED_SCHEMA = pa.schema([*DOCUMENT_COLUMNS, ("file", pa.string()), ("file_rank", pa.int64()),
                           ("record", pa.int64()), ("text_hash", pa.string()), ("chars", pa.int64()),
                           ("location", pa.string()), ("error", pa.string()), ("bucket", pa.int64())])
KEPT_SCHEMA = pa.schema([("bucket", pa.int64()), ("file_rank", pa.int64()), ("record", pa.int64())])
DOCUMENT_SCHEMA = pa.schema([*(c for c in DOCUMENT_COLUMNS if c[0] != "deleted"), ("is_new", pa.bool_()),
                             ("sentence_starts", pa.list_(pa.int64())), ("sentence_ends", pa.list_(pa.int64()))])


def _record_keys(frame: pd.DataFrame) -> np.ndarray:
    """One int64 per parsed record: its file's rank and its number in that file."""
    return frame["file_rank"].to_numpy(np.int64) << 32 | frame["record"].to_numpy(np.int64)


def latest_versions(keys: pd.DataFrame) -> pd.DataFrame:
    """The keys of the latest version of each document, deletions applied: per doc id, the record of
    the latest file, then the highest version, then the later record; a deletion removes the document."""
    latest = keys.sort_values(["doc_id", "file_rank", "version", "record"]).drop_duplicates("doc_id", keep="last")
    return latest[~latest["deleted"]]


def unique_texts(candidates: pd.DataFrame) -> pd.DataFrame:
    """One document per normalised text: the smallest doc id."""
    return candidates.sort_values(["text_hash", "doc_id"]).drop_duplicates("text_hash", keep="first")


def _only(batch: pa.Table, keys: np.ndarray) -> pa.Table:
    """The rows of batch whose record key is in keys (sorted)."""
    record_keys = _record_keys(batch.select(["file_rank", "record"]).to_pandas())
    if not len(keys):
        return batch.slice(0, 0)
    found = keys[np.minimum(np.searchsorted(keys, record_keys), len(keys) - 1)] == record_keys
    return batch.filter(pa.array(found))


def _files(directory: Path) -> list[str]:
    return sorted(str(p) for p in directory.glob("*.parquet")) if directory.is_dir() else []


def _write_row_groups(writer: pq.ParquetWriter, table: pa.Table) -> None:
    """The table as row groups of at most ROW_GROUP_ROWS rows and ROW_GROUP_TEXT_BYTES of text: what
    any later reader (a bucket task, a tokenize actor's unit) holds at once, whatever the documents."""
    for group in batches(table, ROW_GROUP_ROWS, ROW_GROUP_TEXT_BYTES):
        writer.write_table(group)


def _write_atomically(tables: Iterable[pa.Table], target: Path, schema: pa.Schema | None = None) -> int:
    """Stream tables into one Parquet file, written under a temporary name then renamed (a retried
    task rewrites it whole); rows written. With no rows and no schema, no file. The rows are regrouped
    (`coalesced`) into full row groups of ROW_GROUP_ROWS rows or ROW_GROUP_TEXT_BYTES of text."""
    temporary, rows, writer = temporary_path(target), 0, None
    try:
        for group in coalesced(tables, ROW_GROUP_ROWS, ROW_GROUP_TEXT_BYTES):
            if writer is None:
                writer = pq.ParquetWriter(temporary, group.schema)
            writer.write_table(group)
            rows += group.num_rows
        if writer is None and schema is not None:
            writer = pq.ParquetWriter(temporary, schema)
        if writer is not None:
            writer.close()
            os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return rows


def _write_by_bucket(tables: Iterable[pa.Table], directory: Path, name: str) -> None:
    """Stream tables into one Parquet file per bucket, `directory/bucket=<b>/<name>.parquet` (without the
    bucket column), each written under a temporary name and renamed once all are complete."""
    writers: dict[int, tuple[pq.ParquetWriter, Path, Path]] = {}
    try:
        for table in tables:
            buckets = table.column("bucket").to_numpy()
            order = np.argsort(buckets, kind="stable")
            table, buckets = table.take(order).drop_columns(["bucket"]), buckets[order]
            values, starts = np.unique(buckets, return_index=True)
            for bucket, start, end in zip(values.tolist(), starts, [*starts[1:], len(buckets)]):
                if bucket not in writers:
                    target = directory / f"bucket={bucket}" / f"{name}.parquet"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    temporary = temporary_path(target)
                    writers[bucket] = (pq.ParquetWriter(temporary, table.schema), temporary, target)
                _write_row_groups(writers[bucket][0], table.slice(start, end - start))
        for writer, temporary, target in writers.values():
            writer.close()
            os.replace(temporary, target)
    finally:
        for writer, temporary, _ in writers.values():
            writer.close()  # idempotent
            temporary.unlink(missing_ok=True)


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


def _parse_file(item: SourceFile, buckets: int, parsed_dir: str) -> None:
    """Step 1 for one input file: its records, and a quarantine row for each that failed, streamed into
    one Parquet file per bucket named after the file's rank (a retried task rewrites the same files)."""
    _write_by_bucket(_chunks(_read_file(item, buckets), PARSED_SCHEMA), Path(parsed_dir), f"{item.rank:08d}")


def _rebucket(latest_file: str, earlier_dir: str, buckets: int) -> None:
    """Step 1 for one file of an earlier output's latest/: its rows into this run's buckets."""
    batches = (_with_bucket(table, buckets) for table in row_group_tables(latest_file))
    _write_by_bucket(batches, Path(earlier_dir), Path(latest_file).stem)


def _resolve_bucket(bucket: int, sources: list[str], latest_dir: str, handoff_dir: str, buckets: int,
                    min_chars: int) -> int:
    """Step 2 for one bucket: its latest documents to latest/, and the de-duplication candidates
    (long enough) to the hand-off file, sorted by text bucket. Returns the number of latest documents."""
    if not sources:
        return 0
    latest = latest_versions(parquet_dataset(sources).to_table(columns=KEY_COLUMNS).to_pandas())
    candidates = latest[latest["chars"] >= min_chars][["doc_id", "text_hash", "file_rank", "record"]]
    candidates = candidates.assign(
        text_bucket=np.array([bucket_of(h, buckets) for h in candidates["text_hash"]], dtype=np.int64),
        bucket=np.int64(bucket)).sort_values("text_bucket")
    _write_atomically([pa.Table.from_pandas(candidates, schema=HANDOFF_SCHEMA, preserve_index=False)],
                      Path(handoff_dir) / f"{bucket:05d}.parquet")
    keys = np.sort(_record_keys(latest))
    # parsed files and an earlier latest/'s re-bucketed ones hold these columns, in this order
    names = [n for n in PARSED_SCHEMA.names if n not in LATEST_DROPS + ["bucket"]]
    batches = (_only(table.select(names).replace_schema_metadata(None), keys)  # one row group at a time
               for table in row_group_tables(sources, columns=names))
    return _write_atomically(batches, Path(latest_dir) / f"part-{bucket:05d}.parquet")


def _unique_text_bucket(text_bucket: int, handoff_dir: str, kept_dir: str) -> int:
    """Step 3 for one text bucket: the kept documents' record keys, sorted by document bucket."""
    files = _files(Path(handoff_dir))
    if not files:
        return 0
    candidates = parquet_dataset(files).to_table(
        columns=["doc_id", "text_hash", "file_rank", "record", "bucket"],
        filter=pc.field("text_bucket") == text_bucket).to_pandas()
    kept = unique_texts(candidates)[["bucket", "file_rank", "record"]].sort_values("bucket")
    _write_atomically([pa.Table.from_pandas(kept, schema=KEPT_SCHEMA, preserve_index=False)],
                      Path(kept_dir) / f"{text_bucket:05d}.parquet")
    return len(kept)


def _documents_of_bucket(bucket: int, latest_file: str, kept_dir: str, documents_dir: str,
                         first_new_rank: int) -> int:
    """Step 4 for one bucket: its kept documents with their sentence spans."""
    if not Path(latest_file).is_file():
        return 0
    kept_files = _files(Path(kept_dir))
    kept = parquet_dataset(kept_files).to_table(
        columns=["file_rank", "record"], filter=pc.field("bucket") == bucket).to_pandas() if kept_files else None
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


def _with_bucket(batch: pa.Table, buckets: int) -> pa.Table:
    ids = batch.column("doc_id").to_pylist()
    return batch.append_column("bucket", pa.array([bucket_of(i, buckets) for i in ids], pa.int64()))


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

    # 1. parse (and re-bucket the earlier latest/): one Ray task per file, nothing through the object store
    parsed, earlier = output / "_parsed", output / "_earlier"
    task = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_on_node)  # every node's cores and disks
    nodes = _run_step(1, "parse", [task.remote(_parse_file, item, buckets, str(parsed)) for item in new_items]
                      + [task.remote(_rebucket, f, str(earlier), buckets)
                         for f in (_files(previous / "latest") if reused else [])])
    quarantined = _files(parsed / f"bucket={QUARANTINE_BUCKET}")
    errors = (parquet_dataset(quarantined).to_table(columns=["file", "location", "error"]).to_pylist()
              if quarantined else [])
    for error in errors:
        log.warning("quarantined %s (%s): %s", error["file"], error["location"], error["error"])
    (output / "quarantine.json").write_text(json.dumps(errors, indent=2))
    parsed_count = sum(pq.ParquetFile(f).metadata.num_rows for b in range(buckets)
                       for f in _files(parsed / f"bucket={b}"))

    # 2-4. one Ray task per bucket and step; each reads and writes files only
    steps = {name: output / name for name in ("latest", "_handoff", "_kept", "documents")}
    for directory in steps.values():
        directory.mkdir(parents=True, exist_ok=True)
    sources = {b: _files(parsed / f"bucket={b}") + _files(earlier / f"bucket={b}") for b in range(buckets)}
    nodes |= _run_step(2, "latest versions", [task.remote(
        _resolve_bucket, b, sources[b], str(steps["latest"]), str(steps["_handoff"]), buckets, ingest.min_chars)
        for b in range(buckets)])
    nodes |= _run_step(3, "unique texts", [task.remote(_unique_text_bucket, b, str(steps["_handoff"]),
                                                       str(steps["_kept"])) for b in range(buckets)])
    nodes |= _run_step(4, "documents", [task.remote(
        _documents_of_bucket, b, str(steps["latest"] / f"part-{b:05d}.parquet"), str(steps["_kept"]),
        str(steps["documents"]), reused) for b in range(buckets)])
    for scratch in (parsed, earlier, steps["_handoff"], steps["_kept"]):
        shutil.rmtree(scratch, ignore_errors=True)
    (output / "manifest.json").write_text(json.dumps({"files": [_fingerprint(i) for i in items]}, indent=2))

    per_source, sentences = document_counts(output / "documents")
    new_documents = sum(document_counts(output / "documents", only_new=True)[0].values())
    metrics = {"ingest/files": len(items), "ingest/files_parsed": len(new_items), "ingest/files_reused": reused,
               "ingest/quarantined_records": len(errors), "ingest/quarantined_files": len({e["file"] for e in errors}),
               "ingest/records_parsed": parsed_count, "ingest/documents": sum(per_source.values()),
               "ingest/documents_new": new_documents, "ingest/sentences": sentences, "ingest/buckets": buckets,
               "ingest/nodes": len(nodes)}
    metrics.update({f"ingest/documents_{name}": count for name, count in per_source.items()})
    return metrics

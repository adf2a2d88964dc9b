"""Ingest stage: raw files -> deduplicated, sentence-split documents Parquet, with Ray Data.

Each file is read by one Ray task (flat_map over the file list) straight to Parquet. A file that
cannot be parsed is quarantined (listed in quarantine.json with its error) and the rest of the run
completes. De-duplication needs no shuffle of the texts: the driver decides which records survive
from a narrow key table (doc id, file rank, record number, version, deleted, text hash: a few
hundred bytes a document in pandas, read column-wise), and streaming Ray Data passes keep those records and split their
sentences. Memory therefore grows with the number of documents by those few bytes, never with text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as pads
import ray
from ray.data.expressions import col

from bioray.config import IngestConfig
from bioray.corpus.files import list_source_files
from bioray.corpus.quarantine import Quarantined
from bioray.corpus.readers import read_documents
from bioray.corpus.sentences import sentence_spans

log = logging.getLogger(__name__)


def _read_file(item: dict) -> Iterator[dict]:
    """The records of one file, streamed, plus a quarantine row for each record (or rest of file) that failed.

    Whatever parsed before an error is kept: a truncated .gz loses only its unreadable tail.
    """
    path = Path(item["path"])
    documents = records = 0
    common = {"file": item["path"], "file_rank": item["file_rank"]}
    try:
        for record in read_documents(path, item["format"], item["source"], item["text_field"], item["id_field"],
                                     item["documents"]):
            records += 1
            if isinstance(record, Quarantined):
                yield _quarantine_row(item, record)
                continue
            if item["max_docs"] and documents >= item["max_docs"]:
                break
            yield {**record, **common, "record": documents, "text_hash": text_hash(record["text"]),
                   "chars": len(record["text"]), "location": "", "error": ""}
            documents += 1
    except Exception as exc:  # unreadable from here on (truncated gzip, malformed XML, not XML at all)
        where = f"after record {documents}" if documents else "start of file"
        yield _quarantine_row(item, Quarantined(where, f"{type(exc).__name__}: {exc}"))
        return
    if not records:  # reported, so that a file emptied by a failed copy does not pass unnoticed
        yield _quarantine_row(item, Quarantined("whole file", "no records: the file is empty"))


def _quarantine_row(item: dict, bad: Quarantined) -> dict:
    return {"source": item["source"], "doc_id": "", "version": 0, "text": "", "metadata": "{}", "deleted": False,
            "file": item["path"], "file_rank": item["file_rank"], "record": -1, "text_hash": "", "chars": 0,
            "location": bad.location, "error": bad.error}


def text_hash(text: str) -> str:
    """Hash of the normalised text (case and whitespace folded): equal for exact duplicates."""
    return hashlib.sha1(" ".join(text.lower().split()).encode()).hexdigest() if text else ""


KEY_COLUMNS = ["doc_id", "file_rank", "record", "version", "deleted", "text_hash", "chars"]


def _record_keys(frame: pd.DataFrame) -> np.ndarray:
    """One int64 per parsed record: its file's rank and its number in that file."""
    return frame["file_rank"].to_numpy(np.int64) << 32 | frame["record"].to_numpy(np.int64)


def surviving_records(keys: pd.DataFrame, min_chars: int) -> tuple[np.ndarray, np.ndarray]:
    """The record keys of the latest version of each document, and of the documents kept after text de-duplication.

    Latest: per doc id, the record of the latest file, then the highest version, then the later
    record; a deletion removes the document. Kept: latest documents of at least min_chars, one per
    normalised text (the smallest doc id). Vectorised over the whole key table.
    """
    latest = keys.sort_values(["doc_id", "file_rank", "version", "record"]).drop_duplicates("doc_id", keep="last")
    latest = latest[~latest["deleted"]]
    long_enough = latest[latest["chars"] >= min_chars]
    kept = long_enough.sort_values(["text_hash", "doc_id"]).drop_duplicates("text_hash", keep="first")
    return np.sort(_record_keys(latest)), np.sort(_record_keys(kept))


def _only(batch: pd.DataFrame, keys: np.ndarray) -> pd.DataFrame:
    """The rows of batch whose record key is in keys (sorted)."""
    found = np.searchsorted(keys, _record_keys(batch))
    hit = keys[np.minimum(found, len(keys) - 1)] == _record_keys(batch) if len(keys) else np.zeros(len(batch), bool)
    return batch[hit]


def _kept_with_sentences(batch: pd.DataFrame, keys: np.ndarray, first_new_rank: int) -> pd.DataFrame:
    batch = _only(batch, keys).copy()
    batch["is_new"] = batch["file_rank"] >= first_new_rank  # from a file this run parsed
    spans = [sentence_spans(text) for text in batch["text"]]
    batch["sentence_starts"] = [[s for s, _ in doc] for doc in spans]
    batch["sentence_ends"] = [[e for _, e in doc] for doc in spans]
    return batch


def document_counts(documents_dir: Path, only_new: bool = False) -> tuple[dict[str, int], int]:
    """Documents per source and total sentences (of the new documents only), streamed from the Parquet."""
    per_source: dict[str, int] = {}
    sentences = 0
    dataset = pads.dataset(str(documents_dir), format="parquet")
    only = pc.field("is_new") if only_new else None
    for batch in dataset.to_batches(columns=["source", "sentence_starts"], filter=only):
        for item in pc.value_counts(batch.column("source")).to_pylist():
            per_source[item["values"]] = per_source.get(item["values"], 0) + item["counts"]
        sentences += pc.sum(pc.list_value_length(batch.column("sentence_starts"))).as_py() or 0
    return per_source, sentences


def file_items(ingest: IngestConfig, data_root: Path) -> list[dict]:
    """Every input file with its source settings and its rank in publication order."""
    items = []
    for source in ingest.sources:
        for path in list_source_files((Path(data_root) / source.path).resolve(), source.format):
            items.append({"path": str(path), "format": source.format, "source": source.name,
                          "text_field": source.text_field, "id_field": source.id_field, "documents": source.documents,
                          "max_docs": source.max_docs or 0})
    for rank, item in enumerate(items):
        item["file_rank"] = rank
    return items


def reusable_files(items: list[dict], previous: Path | None) -> int:
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


def _fingerprint(item: dict) -> dict:
    stat = Path(item["path"]).stat()
    return {"path": item["path"], "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


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
    log.info("ingest: %d file(s) to parse, %d reused from %s", len(new_items), reused, previous if reused else "-")

    # Parse straight to Parquet (streaming, bounded memory); errors and keys are read back from it column-wise.
    parsed = output / "_parsed"
    errors, parsed_count, frames = [], 0, []
    if new_items:
        files = ray.data.from_items(new_items, override_num_blocks=len(new_items))
        files.flat_map(_read_file).write_parquet(str(parsed))
        status = pads.dataset(str(parsed), format="parquet").to_table(columns=["file", "location", "error"])
        failed = pc.not_equal(status.column("error"), "")
        errors = status.filter(failed).to_pylist()
        parsed_count = status.num_rows - len(errors)
        frames.append(pads.dataset(str(parsed), format="parquet").to_table(
            columns=KEY_COLUMNS, filter=pc.field("error") == "").to_pandas())
    for error in errors:
        log.warning("quarantined %s (%s): %s", error["file"], error["location"], error["error"])
    (output / "quarantine.json").write_text(json.dumps(errors, indent=2))
    if reused:
        earlier = pads.dataset(str(previous / "latest"), format="parquet")
        frames.append(earlier.to_table(columns=KEY_COLUMNS).to_pandas())
    latest_keys, kept_keys = surviving_records(pd.concat(frames, ignore_index=True), ingest.min_chars)

    # Streaming passes, no shuffle: keep the surviving records, then split the kept ones' sentences.
    parts = []
    if new_items:
        parts.append(ray.data.read_parquet(str(parsed)).filter(expr=col("error") == "")
                     .drop_columns(["error", "location", "file"]))
    if reused:
        parts.append(ray.data.read_parquet(str(previous / "latest")))
    records = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    latest = records.map_batches(_only, fn_kwargs={"keys": latest_keys}, batch_format="pandas")
    latest.write_parquet(str(output / "latest"))
    shutil.rmtree(parsed, ignore_errors=True)
    documents = (ray.data.read_parquet(str(output / "latest"))
                 .map_batches(_kept_with_sentences, fn_kwargs={"keys": kept_keys, "first_new_rank": reused},
                              batch_format="pandas")
                 .drop_columns(["deleted", "file_rank", "record", "text_hash", "chars"]))
    documents.write_parquet(str(output / "documents"))
    (output / "manifest.json").write_text(json.dumps({"files": [_fingerprint(i) for i in items]}, indent=2))

    per_source, sentences = document_counts(output / "documents")
    new_documents = sum(document_counts(output / "documents", only_new=True)[0].values())
    metrics = {"ingest/files": len(items), "ingest/files_parsed": len(new_items), "ingest/files_reused": reused,
               "ingest/quarantined_records": len(errors), "ingest/quarantined_files": len({e["file"] for e in errors}),
               "ingest/records_parsed": parsed_count, "ingest/documents": sum(per_source.values()),
               "ingest/documents_new": new_documents,
               "ingest/sentences": sentences}
    metrics.update({f"ingest/documents_{name}": count for name, count in per_source.items()})
    return metrics

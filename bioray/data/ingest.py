"""Ingest stage: raw files -> deduplicated, sentence-split documents Parquet, with Ray Data.

Each file is read by one Ray task (flat_map over the file list). A file that cannot be parsed is
quarantined (listed in quarantine.json with its error) and the rest of the run completes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Iterator

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
    documents = 0
    common = {"file": item["path"], "file_rank": item["file_rank"]}
    try:
        for record in read_documents(path, item["format"], item["source"], item["text_field"], item["id_field"],
                                     item["documents"]):
            if isinstance(record, Quarantined):
                yield _quarantine_row(item, record)
                continue
            if item["max_docs"] and documents >= item["max_docs"]:
                break
            documents += 1
            yield {**record, **common, "location": "", "error": ""}
    except Exception as exc:  # unreadable from here on (truncated gzip, malformed XML, not XML at all)
        where = f"after record {documents}" if documents else "start of file"
        yield _quarantine_row(item, Quarantined(where, f"{type(exc).__name__}: {exc}"))


def _quarantine_row(item: dict, bad: Quarantined) -> dict:
    return {"source": item["source"], "doc_id": "", "version": 0, "text": "", "metadata": "{}", "deleted": False,
            "file": item["path"], "file_rank": item["file_rank"], "location": bad.location, "error": bad.error}


def _latest_versions(block: pd.DataFrame) -> pd.DataFrame:
    """Per doc id, the record from the latest file (then highest version); deletions remove the document.

    Runs on a whole hash partition (every record of a doc id is in it), vectorised: a pandas call
    per group would cost a millisecond per document.
    """
    latest = block.sort_values(["doc_id", "file_rank", "version"]).drop_duplicates("doc_id", keep="last")
    return latest[~latest["deleted"]]


def _distinct_texts(block: pd.DataFrame) -> pd.DataFrame:
    """Per normalised-text hash, the document with the smallest id (exact duplicates removed)."""
    return block.sort_values(["text_hash", "doc_id"]).drop_duplicates("text_hash", keep="first")


def _with_text_hash(block: pd.DataFrame) -> pd.DataFrame:
    block["text_hash"] = [hashlib.sha1(" ".join(t.lower().split()).encode()).hexdigest() for t in block["text"]]
    return block


def _add_sentences(batch: pd.DataFrame) -> pd.DataFrame:
    spans = [sentence_spans(text) for text in batch["text"]]
    batch["sentence_starts"] = [[s for s, _ in doc] for doc in spans]
    batch["sentence_ends"] = [[e for _, e in doc] for doc in spans]
    return batch


def document_counts(documents_dir: Path) -> tuple[dict[str, int], int]:
    """Documents per source and total sentences, streamed from the written Parquet."""
    per_source: dict[str, int] = {}
    sentences = 0
    for batch in pads.dataset(str(documents_dir), format="parquet").to_batches(columns=["source", "sentence_starts"]):
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
    de-duplication; what the next incremental run starts from), `documents/`, `quarantine.json`
    and `manifest.json`.
    """
    items = file_items(ingest, data_root)
    if not items:
        raise ValueError(f"ingest: no input files under {data_root} for sources {[s.path for s in ingest.sources]}")
    reused, previous = max(((reusable_files(items, p), p) for p in earlier_outputs), default=(0, None))
    new_items = items[reused:]
    log.info("ingest: %d file(s) to parse, %d reused from %s", len(new_items), reused, previous if reused else "-")

    # Parse straight to Parquet (streaming, bounded memory); errors and documents are read back from it.
    parsed = output / "_parsed"
    if new_items:
        ray.data.from_items(new_items, override_num_blocks=len(new_items)).flat_map(_read_file).write_parquet(str(parsed))
        status = pads.dataset(str(parsed), format="parquet").to_table(columns=["file", "location", "error"])
        failed = pc.not_equal(status.column("error"), "")
        errors = status.filter(failed).to_pylist()
        parsed_count = status.num_rows - len(errors)
        fresh = (ray.data.read_parquet(str(parsed)).filter(expr=col("error") == "")
                 .drop_columns(["error", "location", "file"]))
    else:
        errors, fresh, parsed_count = [], None, 0
    for error in errors:
        log.warning("quarantined %s (%s): %s", error["file"], error["location"], error["error"])
    (output / "quarantine.json").write_text(json.dumps(errors, indent=2))

    if reused:
        earlier = ray.data.read_parquet(str(previous / "latest"))
        fresh = earlier.union(fresh) if fresh is not None else earlier
    latest = (fresh.repartition(ingest.partitions, keys=["doc_id"])
              .map_batches(_latest_versions, batch_size=None, batch_format="pandas"))
    latest.write_parquet(str(output / "latest"))
    shutil.rmtree(parsed, ignore_errors=True)

    min_chars = ingest.min_chars
    documents = (
        ray.data.read_parquet(str(output / "latest"))
        .map_batches(lambda b: _with_text_hash(b[b["text"].str.len() >= min_chars].copy()), batch_format="pandas")
        .repartition(ingest.partitions, keys=["text_hash"])
        .map_batches(_distinct_texts, batch_size=None, batch_format="pandas")
        .map_batches(_add_sentences, batch_format="pandas")
        .drop_columns(["deleted", "file_rank", "text_hash"])
    )
    documents.write_parquet(str(output / "documents"))
    (output / "manifest.json").write_text(json.dumps({"files": [_fingerprint(i) for i in items]}, indent=2))

    per_source, sentences = document_counts(output / "documents")
    metrics = {"ingest/files": len(items), "ingest/files_parsed": len(new_items), "ingest/files_reused": reused,
               "ingest/quarantined_records": len(errors), "ingest/quarantined_files": len({e["file"] for e in errors}),
               "ingest/records_parsed": parsed_count, "ingest/documents": sum(per_source.values()),
               "ingest/sentences": sentences}
    metrics.update({f"ingest/documents_{name}": count for name, count in per_source.items()})
    return metrics

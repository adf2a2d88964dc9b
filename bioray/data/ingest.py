"""Ingest stage: raw files -> deduplicated, sentence-split documents Parquet, with Ray Data.

Each file is read by one Ray task (flat_map over the file list). A file that cannot be parsed is
quarantined (listed in quarantine.json with its error) and the rest of the run completes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as pads
import ray

from bioray.config import IngestConfig
from bioray.corpus.files import list_source_files
from bioray.corpus.quarantine import Quarantined
from bioray.corpus.readers import read_documents
from bioray.corpus.sentences import sentence_spans

log = logging.getLogger(__name__)


def _read_file(item: dict) -> list[dict]:
    """The records of one file, plus a quarantine row for each record (or rest of file) that failed.

    Whatever parsed before an error is kept: a truncated .gz loses only its unreadable tail.
    """
    path = Path(item["path"])
    rows, documents = [], 0
    common = {"file": item["path"], "file_rank": item["file_rank"]}
    try:
        for record in read_documents(path, item["format"], item["source"], item["text_field"], item["id_field"]):
            if isinstance(record, Quarantined):
                rows.append(_quarantine_row(item, record))
                continue
            if item["max_docs"] and documents >= item["max_docs"]:
                break
            documents += 1
            rows.append({**record, **common, "location": "", "error": ""})
    except Exception as exc:  # unreadable from here on (truncated gzip, malformed XML, not XML at all)
        where = f"after record {documents}" if documents else "start of file"
        rows.append(_quarantine_row(item, Quarantined(where, f"{type(exc).__name__}: {exc}")))
    return rows


def _quarantine_row(item: dict, bad: Quarantined) -> dict:
    return {"source": item["source"], "doc_id": "", "version": 0, "text": "", "metadata": "{}", "deleted": False,
            "file": item["path"], "file_rank": item["file_rank"], "location": bad.location, "error": bad.error}


def _latest_version(group: pd.DataFrame) -> pd.DataFrame:
    """The record from the latest file (then highest version) wins; a deletion removes the document."""
    latest = group.sort_values(["file_rank", "version"]).tail(1)
    return latest[~latest["deleted"]]


def _add_sentences(batch: pd.DataFrame) -> pd.DataFrame:
    spans = [sentence_spans(text) for text in batch["text"]]
    batch["sentence_starts"] = [[s for s, _ in doc] for doc in spans]
    batch["sentence_ends"] = [[e for _, e in doc] for doc in spans]
    return batch


def _document_counts(documents_dir: Path) -> tuple[dict[str, int], int]:
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
                          "text_field": source.text_field, "id_field": source.id_field,
                          "max_docs": source.max_docs or 0})
    for rank, item in enumerate(items):
        item["file_rank"] = rank
    return items


def run_ingest(ingest: IngestConfig, data_root: Path, output: Path) -> dict:
    items = file_items(ingest, data_root)
    if not items:
        raise ValueError(f"ingest: no input files under {data_root} for sources {[s.path for s in ingest.sources]}")
    records = ray.data.from_items(items, override_num_blocks=len(items)).flat_map(_read_file)
    records = records.materialize()

    errors = records.filter(lambda r: bool(r["error"])).select_columns(["file", "location", "error"]).take_all()
    for error in errors:
        log.warning("quarantined %s (%s): %s", error["file"], error["location"], error["error"])
    (output / "quarantine.json").write_text(json.dumps(errors, indent=2))

    documents = (
        records.filter(lambda r: not r["error"])
        .groupby("doc_id", num_partitions=ingest.partitions).map_groups(_latest_version, batch_format="pandas")
        .filter(lambda r: len(r["text"]) >= ingest.min_chars)
        .map(lambda r: {**r, "text_hash": hashlib.sha1(" ".join(r["text"].lower().split()).encode()).hexdigest()})
        .groupby("text_hash", num_partitions=ingest.partitions).map_groups(lambda g: g.sort_values("doc_id").head(1), batch_format="pandas")
        .map_batches(_add_sentences, batch_format="pandas")
        .drop_columns(["deleted", "error", "location", "file_rank", "text_hash"])
    )
    documents.write_parquet(str(output / "documents"))

    per_source, sentences = _document_counts(output / "documents")
    metrics = {"ingest/files": len(items), "ingest/quarantined_records": len(errors),
               "ingest/quarantined_files": len({e["file"] for e in errors}),
               "ingest/records_read": records.count() - len(errors), "ingest/documents": sum(per_source.values()),
               "ingest/sentences": sentences}
    metrics.update({f"ingest/documents_{name}": count for name, count in per_source.items()})
    return metrics

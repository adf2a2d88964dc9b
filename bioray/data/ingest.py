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

from bioray.config import IngestConfig, WorkflowConfig
from bioray.corpus.files import list_source_files
from bioray.corpus.readers import read_documents
from bioray.corpus.sentences import sentence_spans

log = logging.getLogger(__name__)


def _read_file(item: dict) -> list[dict]:
    """All records of one file, or a single error record naming the file."""
    try:
        records = list(read_documents(Path(item["path"]), item["format"], item["source"],
                                      item["text_field"], item["id_field"]))
        if item["max_docs"]:
            records = records[: item["max_docs"]]
    except Exception as exc:  # any parse failure quarantines this file only
        return [{"source": item["source"], "doc_id": "", "version": 0, "text": "", "metadata": "{}",
                 "deleted": False, "file": item["path"], "file_rank": item["file_rank"],
                 "error": f"{type(exc).__name__}: {exc}"}]
    for record in records:
        record.update(file=item["path"], file_rank=item["file_rank"], error="")
    return records


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


def file_items(config: WorkflowConfig) -> list[dict]:
    """Every input file with its source settings and its rank in publication order."""
    items = []
    for source in config.ingest.sources:
        for path in list_source_files(config.data_path(source.path), source.format):
            items.append({"path": str(path), "format": source.format, "source": source.name,
                          "text_field": source.text_field, "id_field": source.id_field,
                          "max_docs": source.max_docs or 0})
    for rank, item in enumerate(items):
        item["file_rank"] = rank
    return items


def run_ingest(config: WorkflowConfig, output: Path) -> dict:
    ingest: IngestConfig = config.ingest
    items = file_items(config)
    records = ray.data.from_items(items, override_num_blocks=len(items)).flat_map(_read_file)
    records = records.materialize()

    errors = records.filter(lambda r: bool(r["error"])).select_columns(["file", "error"]).take_all()
    if errors:
        log.warning("quarantined %d file(s): %s", len(errors), "; ".join(f"{e['file']}: {e['error']}" for e in errors))
    (output / "quarantine.json").write_text(json.dumps(errors, indent=2))

    documents = (
        records.filter(lambda r: not r["error"])
        .groupby("doc_id", num_partitions=ingest.partitions).map_groups(_latest_version, batch_format="pandas")
        .filter(lambda r: len(r["text"]) >= ingest.min_chars)
        .map(lambda r: {**r, "text_hash": hashlib.sha1(" ".join(r["text"].lower().split()).encode()).hexdigest()})
        .groupby("text_hash", num_partitions=ingest.partitions).map_groups(lambda g: g.sort_values("doc_id").head(1), batch_format="pandas")
        .map_batches(_add_sentences, batch_format="pandas")
        .drop_columns(["deleted", "error", "file_rank", "text_hash"])
    )
    documents.write_parquet(str(output / "documents"))

    per_source, sentences = _document_counts(output / "documents")
    metrics = {"ingest/files": len(items), "ingest/quarantined_files": len(errors),
               "ingest/records_read": records.count(), "ingest/documents": sum(per_source.values()),
               "ingest/sentences": sentences}
    metrics.update({f"ingest/documents_{name}": count for name, count in per_source.items()})
    return metrics

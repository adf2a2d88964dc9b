"""What a reader yields per record: a Document, or a Quarantined record it could not use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """One parsed document; ingest's parsed Parquet rows start with these columns (types from these annotations)."""

    source: str
    doc_id: str
    version: int
    text: str
    metadata: str = "{}"  # JSON
    deleted: bool = False  # a deletion record (MEDLINE DeleteCitation): no text, removes doc_id


@dataclass(frozen=True)
class Quarantined:
    location: str  # e.g. "line 12", "PubmedArticle 3 (PMID 123)", "after record 40"
    error: str

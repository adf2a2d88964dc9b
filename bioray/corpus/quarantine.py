"""A record a reader could not use, with where it is and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quarantined:
    location: str  # e.g. "line 12", "PubmedArticle 3 (PMID 123)", "after record 40"
    error: str

"""Where the tests' real data is: the quickstart's order, $BIORAY_DATA_ROOT, else ../shared/data beside
the checkout (CI), else — a bare clone — the repository's sample-data/, laid out as ../shared/data is.
A test that needs a file the sample lacks marks it: `@pytest.mark.needs_data("<relative path>", ...)`,
and is skipped, saying how to get it, where the file is missing (listed in docs/development.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bioray.config import first_existing
from tests.support.cli import REPO

SAMPLE_DATA = REPO / "sample-data"
DATA_ROOT = first_existing([os.environ.get("BIORAY_DATA_ROOT", ""), str(REPO.parent / "shared" / "data"),
                            str(SAMPLE_DATA)]).resolve()


def missing_data_reason(missing: list[str]) -> str:
    """Why a test that needs more than sample-data/ is skipped, and how to get what it needs."""
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return (f"needs {shown} under {DATA_ROOT}, which sample-data/ does not hold: put the shared "
            "data beside the checkout (../shared/data) or point BIORAY_DATA_ROOT at a copy; the benchmark "
            "datasets alone: `bioray fetch --source benchmarks DIR`, then BIORAY_DATA_ROOT=DIR")


# workflows/blurb.yaml's benchmarks but BioBERT's NCBI-disease files (sample-data/ has a prefix of those)
needs_blurb_data = pytest.mark.needs_data("NCBI-disease/original_pubtator", "BC5CDR-chem", "JNLPBA", "ChemProt",
                                          "BIOSSES", "HoC", "PubMedQA")


def pmc_articles(data_root: Path) -> int:
    """The PMC articles under pubmed-raw/ (one document each)."""
    return len(list((data_root / "pubmed-raw" / "pmc_oa_nxml").glob("*.nxml")))


def pubmed_raw_records(data_root: Path) -> int:
    """The records under pubmed-raw/: one per non-blank abstract line, PMC article and MEDLINE citation
    (ingest makes a document of each, less the few it drops as too short or duplicate)."""
    raw = data_root / "pubmed-raw"
    lines = sum(1 for path in raw.glob("abstracts_one_per_line/*.txt") for line in path.open() if line.strip())
    citations = sum(path.read_text().count("<PubmedArticle>") for path in raw.glob("medline_xml/*.xml"))
    return lines + pmc_articles(data_root) + citations

"""Public benchmark files by URL and checksum (benchmark_files.yaml), for `bioray fetch --source
benchmarks`: downloaded through the corpus fetcher (resumed, written under their names only once their
SHA-256 matched), into the layout the workflows read."""

from __future__ import annotations

import logging
from functools import cache
from importlib.resources import files
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlparse

import yaml

from bioray.corpus.fetch import FetchReport, digest_of, fetch_file

log = logging.getLogger(__name__)


@cache
def catalogue() -> dict:
    return yaml.safe_load(files("bioray.tasks").joinpath("benchmark_files.yaml").read_text())


def fetch_benchmarks(destination: Path, names: tuple[str, ...] = (), mirror: str | None = None,
                     timeout: float = 60) -> FetchReport:
    """The named benchmarks' files (all when none is named) into destination. `mirror`: a base URL
    holding the same paths as the files' hosts (e.g. a local copy of raw.githubusercontent.com). A file
    already here with the right SHA-256 is kept; one with another is reported, never overwritten."""
    known = catalogue()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown benchmark {unknown[0]!r}; known: {', '.join(known)}")
    report = FetchReport()
    for name in names or tuple(known):
        for relative, source in known[name]["files"].items():
            if PurePosixPath(relative).is_absolute() or ".." in PurePosixPath(relative).parts:
                raise ValueError(f"benchmark_files.yaml: {relative}: not a relative path inside DEST")
            target = destination / relative
            if target.exists():
                if digest_of(target, "sha256") == source["sha256"]:
                    report.already_present.append(relative)
                else:
                    report.failed[relative] = "present with another SHA-256: not overwritten (move it away to fetch)"
                continue
            url = urljoin(mirror, urlparse(source["url"]).path.lstrip("/")) if mirror else source["url"]
            target.parent.mkdir(parents=True, exist_ok=True)
            fetch_file(report, relative, url, target, lambda digest=source["sha256"]: digest, timeout, "sha256")
    return report

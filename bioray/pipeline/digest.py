"""A stage output's content digest: a hash of its files (each by its path and content, in path order),
leaving out what records when and where it ran (its timings, MLflow run ids: the stage's `volatile`
files) and bioray's own records beside it. Two outputs of the same key with the same digest are the
same output; `bioray status --digests` shows them, so two workdirs can be compared stage by stage."""

from __future__ import annotations

import hashlib
import json
from fnmatch import fnmatch
from pathlib import Path

DIGEST_FILE = "digest.json"
RECORDS = ("result.json", "stage.yaml", DIGEST_FILE)  # bioray's records of the run (metrics with timings)


def content_digest(directory: Path, volatile: tuple[str, ...] = ()) -> dict:
    """{digest, files: {path: sha256}, volatile: the patterns left out}."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        if not any(fnmatch(relative, pattern) for pattern in (*RECORDS, *volatile)):
            with open(path, "rb") as stream:
                files[relative] = hashlib.file_digest(stream, "sha256").hexdigest()
    total = hashlib.sha256("".join(f"{name}\0{sha}\n" for name, sha in files.items()).encode()).hexdigest()
    return {"digest": total[:16], "files": files, "volatile": list(volatile)}


def read_digest(directory: Path) -> dict | None:
    path = directory / DIGEST_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def differing_files(old: dict, new: dict) -> list[str]:
    """The files whose content differs between two digests (or that only one has)."""
    names = sorted(set(old["files"]) | set(new["files"]))
    return [name for name in names if old["files"].get(name) != new["files"].get(name)]

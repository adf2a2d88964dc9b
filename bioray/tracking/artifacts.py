"""Stage output files as artifacts of the stage's MLflow run: small ones as they are, a few large ones
(a stage kind names them, e.g. the evaluate stage's predictions.jsonl) compressed and capped.

Why a cap: the stage output keeps the whole file (the run's `bioray.output` tag says where); the
artifact is for reading a run in the MLflow UI or pulling it from anywhere, and a multi-GB upload per
pipeline run (cached stages log their outputs again) would cost more than it gives.
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

SMALL_BYTES = 5_000_000  # a file under this is logged as it is
CAP_BYTES = 100_000_000  # of a larger one, at most this many bytes of whole lines are kept (before compression)


def log_output_file(client, run_id: str, path: Path, cap: int = CAP_BYTES) -> dict:
    """Log `path` on the run: as it is when small, else as `<name>.gz` holding its first lines up to
    `cap` bytes (all of them when it fits). Returns what was logged: {artifact, lines, kept}; a capped
    file also sets the run tag `bioray.capped.<name>` = "<kept> of <lines> lines"."""
    if path.stat().st_size < SMALL_BYTES:
        client.log_artifact(run_id, str(path))
        return {"artifact": path.name, "lines": None, "kept": None}
    lines = kept = size = 0
    with tempfile.TemporaryDirectory() as tmp:
        compressed = Path(tmp) / f"{path.name}.gz"
        with open(path, "rb") as source, gzip.open(compressed, "wb", compresslevel=6) as sink:
            for line in source:
                lines += 1
                if kept == lines - 1 and size + len(line) <= cap:  # a prefix of the file: no line skipped
                    sink.write(line)
                    size += len(line)
                    kept += 1
        client.log_artifact(run_id, str(compressed))
    if kept < lines:
        client.set_tag(run_id, f"bioray.capped.{path.name}", f"{kept} of {lines} lines")
    return {"artifact": compressed.name, "lines": lines, "kept": kept}

"""A stage whose output directory is full or read-only, in a real `bioray` run: a clear error that names
the stage, the path and the cause; earlier stages' outputs intact; a rerun once the disk is fixed reuses
them. The faults are real: a tiny tmpfs (ENOSPC) and a read-only remount (EROFS) over the stage's
directory, so the test needs a machine where it may mount (root, as on CI); it fails, not skips,
where it may not."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.reliability.bioray_cli import run_bioray


def _workflow(tmp_path: Path, data_root: Path) -> Path:
    tree = {
        "name": "disk", "workdir": str(tmp_path / "work"), "data_root": str(data_root),
        "ray": {"num_cpus": 3},
        "ingest": {"sources": [{"name": "abstracts", "format": "jsonl", "path": "corpus/medical-abstracts-tc",
                                "max_docs": 600}]},
        "vocab": {"size": 2000, "sample_docs": 600},
        "tokenize": {"seq_len": 64, "batch_size": 100},
        "finetune": {"datasets": [{"name": "ncbi-disease", "task": "ner", "train": "NCBI-disease/biobert/train.tsv",
                                   "dev": "NCBI-disease/biobert/devel.tsv", "test": "NCBI-disease/biobert/test.tsv"}]},
    }
    path = tmp_path / "disk.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    assert done.returncode == 0, f"this test needs to mount a tmpfs (root): mount {' '.join(args)}: {done.stderr}"


def _digests(stages: Path, name: str) -> dict[str, str]:
    return {str(p.relative_to(stages)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((stages / name).rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("fault, options, cause", [
    ("full disk", ["-o", "size=64k"], "No space left on device"),
    ("read-only", ["-o", "size=64m,ro"], "Read-only file system"),
])
def test_a_stage_that_cannot_write_fails_clearly_and_keeps_earlier_outputs(tmp_path, data_root, fault, options, cause):
    workflow = _workflow(tmp_path, data_root)
    stages = tmp_path / "work" / "stages"
    first = run_bioray("vocab", str(workflow))
    assert first.returncode == 0, first.stderr[-3000:]
    before = {name: _digests(stages, name) for name in ("ingest", "vocab")}

    target = stages / "tokenize"
    target.mkdir()
    _mount("-t", "tmpfs", *options, "tmpfs", str(target))
    try:
        failed = run_bioray("tokenize", str(workflow))
        leftovers = sorted(p.name for p in target.iterdir())
    finally:
        subprocess.run(["umount", str(target)], check=True)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, output[-3000:]
    error = next((line for line in output.splitlines() if "stage tokenize failed" in line), None)
    assert error, f"no 'stage tokenize failed' line ({fault}):\n{output[-3000:]}"
    assert cause in error and str(target) in error, error  # what went wrong, and where
    assert "Traceback" not in error
    assert leftovers == []  # nothing half-written stays behind on the full/read-only volume
    assert {name: _digests(stages, name) for name in ("ingest", "vocab")} == before  # earlier outputs intact

    again = run_bioray("tokenize", str(workflow))  # the disk is fine again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "cached" in again.stderr and {name: _digests(stages, name) for name in ("ingest", "vocab")} == before
    assert list(target.glob("*/result.json")) and list(target.glob("*/sequences/*.parquet"))

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

from tests.support.cli import run_bioray
from tests.support.workflows import copy_stages, small_workflow, write_workflow


def _workflow(tmp_path: Path, data_root: Path, template: Path) -> Path:
    """The session's corpus workdir with ingest and vocab committed: the tokenize stage is next."""
    copy_stages(template, tmp_path / "work", ("ingest", "vocab"))
    return write_workflow(small_workflow(tmp_path / "work", data_root, name="disk", ray={"num_cpus": 3}),
                          tmp_path / "disk.yaml")


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    assert done.returncode == 0, f"this test needs to mount a tmpfs (root): mount {' '.join(args)}: {done.stderr}"


def _digests(stages: Path, name: str) -> dict[str, str]:
    return {str(p.relative_to(stages)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((stages / name).rglob("*")) if p.is_file()}


@pytest.mark.extended
@pytest.mark.parametrize("fault, options, cause", [
    ("full disk", ["-o", "size=64k"], "No space left on device"),
    ("read-only", ["-o", "size=64m,ro"], "Read-only file system"),
])
def test_a_stage_that_cannot_write_fails_clearly_and_keeps_earlier_outputs(tmp_path, data_root, corpus_template,
                                                                           fault, options, cause):
    workflow = _workflow(tmp_path, data_root, corpus_template)
    stages = tmp_path / "work" / "stages"
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

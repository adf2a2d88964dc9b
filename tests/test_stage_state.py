"""`bioray status` tells cached, running, interrupted, failed and stale stages apart, from what the
runner records in the workdir (bioray.pipeline.stage_state); a committed output always wins."""

from __future__ import annotations

import json
import subprocess
import sys

from bioray.config import load_workflow
from bioray.pipeline import stage_state
from bioray.pipeline.stage_state import stage_status
from tests.support.cli import run_bioray
from tests.support.workflows import small_workflow, write_workflow


def test_status_of_each_kind_of_stage(tmp_path, data_root):
    workflow = write_workflow(small_workflow(tmp_path / "work", data_root), tmp_path / "wf.yaml")
    config = load_workflow(workflow)
    keys = {row["stage"]: row["key"] for row in stage_status(config)}
    assert set(stage_status(config)[0]) == {"stage", "status", "key", "output"}

    ingest = config.paths.stage_dir("ingest", keys["ingest"])
    ingest.mkdir(parents=True)
    (ingest / "result.json").write_text("{}")  # committed: cached, whatever else is recorded
    stage_state.mark_failed(config.paths, "ingest", keys["ingest"], "an older failure")
    stage_state.mark_running(config.paths, "vocab", keys["vocab"])  # by this live process
    gone = subprocess.Popen([sys.executable, "-c", "import os; print(os.getpid())"], stdout=subprocess.PIPE)
    gone.wait()
    state = config.paths.stage_state("tokenize", keys["tokenize"])
    stage_state.mark_running(config.paths, "tokenize", keys["tokenize"])
    state.write_text(json.dumps({**json.loads(state.read_text()), "pid": gone.pid}))  # a driver that died
    stage_state.mark_failed(config.paths, "pretrain", keys["pretrain"], "RuntimeError: out of memory\ntraceback")

    rows = {row["stage"]: row for row in stage_status(config)}
    assert {name: row["status"] for name, row in rows.items() if row["status"] != "stale"} == {
        "ingest": "cached", "vocab": "running", "tokenize": "interrupted", "pretrain": "failed"}
    assert rows["pretrain"]["error"] == "RuntimeError: out of memory"
    stage_state.clear(config.paths, "vocab", keys["vocab"])
    assert {row["stage"]: row["status"] for row in stage_status(config)}["vocab"] == "stale"

    shown = run_bioray("status", str(workflow))
    assert shown.returncode == 0, shown.stderr[-2000:]
    stale = len(rows) - 3
    assert shown.stdout.splitlines()[-1] == f"{len(rows)} stages: 1 cached, 1 interrupted, 1 failed, {stale} stale"
    assert "RuntimeError: out of memory" in shown.stdout

"""What `bioray status` knows of a stage instance that has no committed output: `running` (a live
`bioray` driver submitted it), `interrupted` (the driver that submitted it is gone) or `failed` (its
last run's error). Kept in `<workdir>/runs/<stage>/<key>.state.json`, following the runner's stage
events (StateFiles); a committed output (its `result.json`) always wins, and the file goes when the
stage commits. Bookkeeping: a state that cannot be written (a full or read-only disk) is logged, and
the run goes on."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from bioray.config import WorkflowConfig
from bioray.pipeline.digest import read_digest
from bioray.pipeline.events import StageFailed, StageFinished, StageStarted
from bioray.pipeline.plan import build_plan, compute_keys, is_cached, stage_dir
from bioray.workdir import Workdir

log = logging.getLogger(__name__)

STATUSES = ("cached", "running", "interrupted", "failed", "stale")  # what `bioray status` shows


class StateFiles:
    """A stage's state file while a run handles it: running once handed to Ray, failed with its own error;
    gone when it ends otherwise (one never started keeps what an earlier run recorded)."""

    def __init__(self, paths: Workdir):
        self.paths = paths

    def __call__(self, event) -> None:
        match event:
            case StageStarted(node, key):
                mark_running(self.paths, node.name, key)
            case StageFailed(node, key, error, upstream=None):
                mark_failed(self.paths, node.name, key, error)
            case StageFinished(node, key) | StageFailed(node, key, started=True):
                clear(self.paths, node.name, key)


def mark_running(paths: Workdir, name: str, key: str) -> None:
    _write(paths, name, key, {"status": "running", "host": socket.gethostname(), "pid": os.getpid()})


def mark_failed(paths: Workdir, name: str, key: str, error: str) -> None:
    _write(paths, name, key, {"status": "failed", "error": error.splitlines()[0][:300] if error else ""})


def clear(paths: Workdir, name: str, key: str) -> None:
    try:
        paths.stage_state(name, key).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("stage %s: its state file could not be removed: %s", name, exc)


def read(paths: Workdir, name: str, key: str) -> dict | None:
    """The recorded state, `running` turned `interrupted` when its driver no longer runs on this host
    (on another host a running state is taken as it is); None when nothing is recorded."""
    try:
        state = json.loads(paths.stage_state(name, key).read_text())
    except (OSError, ValueError):
        return None
    if state.get("status") == "running" and state.get("host") == socket.gethostname() \
            and not _alive(int(state.get("pid", 0))):
        state["status"] = "interrupted"
    return state


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _write(paths: Workdir, name: str, key: str, state: dict) -> None:
    target = paths.stage_state(name, key)
    partial = target.with_name(f"{target.name}.{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({**state, "since": time.time()}))
        partial.replace(target)  # atomic: status never reads half a file
    except OSError as exc:
        log.warning("stage %s: its state (%s) could not be recorded for `bioray status`: %s", name,
                    state["status"], exc)
        partial.unlink(missing_ok=True)


def stage_status(config: WorkflowConfig) -> list[dict]:
    """Every stage with its key, output location and status: cached (a committed output, with its content
    digest), running, interrupted or failed (its state file, with the error), else stale."""
    nodes = build_plan(config)
    keys = compute_keys(nodes)
    rows = []
    for node in nodes:
        key = keys[node.name]
        row = {"stage": node.name, "status": "stale", "key": key, "output": str(stage_dir(config, node.name, key))}
        if is_cached(config, node.name, key):
            row["status"] = "cached"
            digest = read_digest(Path(row["output"])) or {}  # none: made before digests
            row.update(digest=digest.get("digest"), **{k: digest[k] for k in ("nondeterministic",) if k in digest})
        elif (state := read(config.paths, node.name, key)) is not None:
            row["status"] = state["status"]
            if state.get("error"):
                row["error"] = state["error"]
        rows.append(row)
    return rows

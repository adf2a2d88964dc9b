"""Scheduled re-pretraining around a workflow run: a lock, the fetch of new NLM files, and the check
that there is something new at all.

`bioray run` takes this path for a workflow with a `repretrain` section (workflows/repretrain.yaml):
  1. take the workdir's run lock, or exit cleanly when another live run holds it;
  2. fetch the files each `repretrain.fetch` listing has and the destination lacks (MD5-checked, in
     publication order: a file that fails stops that listing, so later files never arrive before it);
  3. compare the workflow's inputs (ingest files, config) with those of the last successful run: the
     same means nothing to do, and the run says so and exits without starting Ray or MLflow runs;
  4. otherwise pin the init checkpoints (`models:/...@champion` -> a version) and run the DAG: ingest
     and tokenize only the new documents, continue pretraining from the champion, evaluate, and put the
     new version through the champion/challenger gate;
  5. record the inputs of a successful run, release the lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bioray.config import WorkflowConfig
from bioray.corpus.files import list_source_files
from bioray.pipeline.lock import LockHeld, RunLock
from bioray.pipeline.plan import fingerprint

log = logging.getLogger(__name__)


@dataclass
class ScheduledOutcome:
    status: str  # "locked" | "nothing-new" | "ran"
    message: str
    fetched: list[str] = field(default_factory=list)
    fetch_failed: dict[str, str] = field(default_factory=dict)
    summary: object = None  # the RunSummary when the DAG ran


def fetch_new_files(config: WorkflowConfig) -> tuple[list[str], dict[str, str]]:
    from bioray.corpus.fetch import fetch_pubmed

    fetched, failed = [], {}
    for source in config.repretrain.fetch:
        report = fetch_pubmed(source.listing, config.data_path(source.destination), in_order=True)
        fetched += report.downloaded
        failed.update(report.failed)
        log.info("fetch %s: %d new, %d already here, %d failed", source.listing, len(report.downloaded),
                 len(report.already_present), len(report.failed))
    return fetched, failed


def inputs_digest(config: WorkflowConfig) -> tuple[str, int]:
    """A hash of everything a run's result depends on that can change between scheduled runs: the
    ingest files (path, size, mtime) and the workflow config; and the number of files."""
    files = [fingerprint(str(p)) for s in config.ingest.sources
             for p in list_source_files(config.data_path(s.path), s.format)]
    payload = json.dumps({"files": files, "config": config.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16], len(files)


def run_scheduled(config: WorkflowConfig, run: Callable[[WorkflowConfig], object]) -> ScheduledOutcome:
    """Steps 1-5 above; `run` runs the DAG of the (model-ref-resolved) config and returns its RunSummary."""
    from bioray.pipeline.model_refs import resolve_model_refs

    lock = RunLock(config.paths.run_lock, config.repretrain.lock_stale_after_s)
    try:
        took_over = lock.acquire()
    except LockHeld as held:
        return ScheduledOutcome("locked", f"another run holds the lock, so this one does nothing: {held}")
    try:
        if took_over:
            log.warning(took_over)
        fetched, failed = fetch_new_files(config)
        digest, count = inputs_digest(config)
        state_path = config.paths.run_state
        last = json.loads(state_path.read_text()) if state_path.is_file() else {}
        if last.get("inputs") == digest:
            return ScheduledOutcome(
                "nothing-new", f"no new files since the last successful run ({last.get('finished')}, {count} "
                f"input files, MLflow run {last.get('parent_run_id')}): nothing to do", fetched, failed)
        pinned = resolve_model_refs(config)
        summary = run(config)
        if not summary.failed:
            state_path.write_text(json.dumps({
                "inputs": digest, "files": count, "fetched": fetched, "models": pinned,
                "parent_run_id": summary.parent_run_id,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2))
        message = f"{len(fetched)} new file(s) fetched; started from {pinned or 'the configured checkpoints'}"
        return ScheduledOutcome("ran", message, fetched, failed, summary)
    finally:
        lock.release()

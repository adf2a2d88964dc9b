"""Run a workflow's stage DAG on Ray, one MLflow parent run with a child run per stage.

Ray is the scheduler: each stage to run is a Ray task whose arguments are its upstream stages'
ObjectRefs, so Ray starts it when they are done and runs independent stages (fine-tuning per
dataset and seed) in parallel. Cached stages are not submitted at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bioray.config import ConfigError, WorkflowConfig
from bioray.metric_names import is_stage_metric
from bioray.pipeline import stage_state
from bioray.pipeline.execute import StageResult, earlier_outputs, execute_node
from bioray.pipeline.plan import (
    build_plan,
    compute_keys,
    downstream,
    fingerprint,
    is_cached,
    needed_nodes,
    stage_dir,
)
from bioray.pipeline.stages.base import Node, StageEnv
from bioray.pipeline.terminal import StageLines, say
from bioray.tracking.artifacts import SMALL_BYTES, log_output_file
from bioray.tracking.context import RunContext
from bioray.tracking.outbox import SPILL_FILE, replay_spilled
from bioray.tracking.runs import common_tags, flatten, log_lineage, log_metrics, log_params_and_tags
from bioray.tracking.store import activate, ensure_experiment, tracking_uri_for

log = logging.getLogger(__name__)

ARTIFACT_SUFFIXES = (".json", ".md", ".png", ".yaml")


@dataclass
class RunSummary:
    """What a pipeline run did: results of finished stages (run or cached), errors of failed ones."""

    parent_run_id: str
    results: dict[str, StageResult] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    waited_for_cpus: list[str] = field(default_factory=list)  # training stages held back for free CPUs


def ray_module(config: WorkflowConfig, quiet: bool = False):
    """Ray, connected: to RAY_ADDRESS / ray.address when given, else to a new local instance. `quiet`:
    the workers' output stays in Ray's session logs (their progress lines reach the terminal through
    bioray.progress), and Ray's own driver logging says only warnings.

    Imported here, not at module level, so `bioray status` and fully cached runs never start Ray.
    """
    import ray

    if not ray.is_initialized():
        address = config.ray.address or os.environ.get("RAY_ADDRESS")
        options = {"log_to_driver": not quiet, "logging_level": logging.WARNING if quiet else logging.INFO}
        if address:
            ray.init(address=address, **options)
        else:  # a new local instance (never a stray cluster found on this machine); logical CPUs:
            # training workers, data tasks and stage tasks share the cores
            ray.init(address="local", num_cpus=config.ray.num_cpus or max(4, os.cpu_count() or 1), **options)
        if quiet:
            say("Ray's logs (the stages' workers): %s", _ray_logs())
    return ray


def _ray_logs() -> str:
    try:  # Ray has no public accessor for the session directory
        from ray._private.worker import _global_node

        return _global_node.get_logs_dir_path()
    except Exception:
        return "the Ray head node's session_latest/logs"


def _log_outputs(client, run_id: str, directory: Path, large: tuple[str, ...]) -> None:
    """The output's small reports on its run, and the files its stage kind names whatever their size."""
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in ARTIFACT_SUFFIXES and path.stat().st_size < SMALL_BYTES \
                and path.name not in large:
            client.log_artifact(run_id, str(path))
    for name in large:
        if (directory / name).is_file():
            log_output_file(client, run_id, directory / name)


# `module.Type: message` or `Type(Wrapped): message` at the start of a line of a Ray traceback
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*)(?:\(\w+\))?: (.+)$")


def _root_error(exc: Exception) -> str:
    """The error behind a (Ray-wrapped) exception, one line: the last exception line of its traceback
    text that is not one of Ray's own. Ray Data wraps a stage's error in UserCodeException and appends
    retry hints after it, so the plain last line would be a hint."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    errors = [match for line in lines if not line.startswith("ray.") and (match := _ERROR_LINE.match(line))]
    if errors:
        return f"{errors[-1].group(1)}: {errors[-1].group(2)}"
    return lines[-1] if lines else type(exc).__name__


class _StageRuns:
    """The MLflow side of one pipeline run: a parent run and a child run per stage."""

    def __init__(self, config: WorkflowConfig, targets: list[str] | None, workflow_file: str):
        uri = tracking_uri_for(config.tracking.uri, config.paths.mlflow_db)
        config.workdir_path.mkdir(parents=True, exist_ok=True)
        self.client = activate(uri)
        experiment_id = ensure_experiment(self.client, config.tracking.experiment, config.paths.mlflow_artifacts)
        self.tags = common_tags()
        parent = self.client.create_run(experiment_id, run_name=config.name, tags={
            **self.tags, "bioray.workflow": workflow_file, "bioray.targets": ",".join(targets or ["all"])})
        self.context = RunContext(uri, experiment_id, parent.info.run_id)
        self.parent_id = parent.info.run_id
        self.client.log_text(self.parent_id, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False),
                             "workflow.resolved.yaml")
        log_params_and_tags(self.client, self.parent_id, {"workflow": config.name, "workdir": str(config.workdir_path)},
                            {})
        self.children: dict[str, str] = {}
        self.large_artifacts: dict[str, tuple[str, ...]] = {}  # stage name -> the large files its kind logs
        self.headline: dict[str, tuple] = {}  # stages whose metrics and named outputs go on the parent run too

    def start_child(self, node: Node, key: str, output: Path, cached: bool, lineage: list[dict]) -> str:
        child = self.client.create_run(self.context.experiment_id, run_name=node.name, tags={
            **self.tags, "mlflow.parentRunId": self.parent_id, "bioray.stage": node.name,
            "bioray.stage_kind": node.kind, "bioray.stage_key": key, "bioray.cache": "hit" if cached else "miss",
            "bioray.output": str(output)})
        self.children[node.name] = child.info.run_id
        self.large_artifacts[node.name] = node.stage.large_artifacts
        if node.stage.parent_metrics or node.stage.parent_artifacts:
            self.headline[node.name] = (node.stage.parent_metrics, node.stage.parent_artifacts)
        log_params_and_tags(self.client, child.info.run_id, flatten(node.params_json() or {}), {})
        log_lineage(self.client, child.info.run_id, lineage)
        return child.info.run_id

    def producer(self, key: str) -> str | None:
        """The run of this experiment that ran the stage instance with this key (the latest), if any."""
        runs = self.client.search_runs([self.context.experiment_id], f"tags.`bioray.stage_key` = '{key}' and "
                                       "tags.`bioray.cache` = 'miss' and attributes.status = 'FINISHED'",
                                       max_results=1, order_by=["attributes.start_time DESC"])
        return runs[0].info.run_id if runs else None

    def finish_cached_child(self, name: str, key: str, result: StageResult) -> None:
        """A cached stage's run points at the run that produced its output (tag `bioray.produced_by`)
        instead of copying its metrics and artifacts; when no run of this experiment produced it (a
        copied workdir, another tracking store), it carries them itself."""
        producer = self.producer(key)
        if producer is None:
            self.finish_child(name, result)
            return
        self.client.set_tag(self.children[name], "bioray.produced_by", producer)
        self.client.set_terminated(self.children[name], "FINISHED")

    def finish_child(self, name: str, result: StageResult) -> None:
        run_id = self.children[name]
        unsent = Path(result.path) / SPILL_FILE
        if unsent.is_file():  # the tracking server was down while the stage's workers logged
            replayed = replay_spilled(self.client, unsent)
            self.client.set_tag(run_id, "bioray.tracking_replayed", str(replayed))
            log.warning("stage %s: %d tracking write(s) made while MLflow was unreachable sent now", name, replayed)
        log_metrics(self.client, run_id, result.metrics)  # keeps the numeric ones
        _log_outputs(self.client, run_id, Path(result.path), self.large_artifacts[name])
        self.client.set_terminated(run_id, "FINISHED")

    def fail_child(self, name: str, error: str) -> None:
        self.client.set_tag(self.children[name], "bioray.error", error[:5000])
        self.client.set_terminated(self.children[name], "FAILED")

    def finish(self, summary: RunSummary, run_count: int, interrupted: bool = False) -> None:
        for name, run_id in self.children.items():  # a stage still running when the driver stops
            if name not in summary.results and name not in summary.failed:
                self.client.set_terminated(run_id, "KILLED")
        metrics = {"pipeline/seconds": summary.seconds, "pipeline/stages_run": run_count,
                   "pipeline/stages_cached": len(self.children) - run_count}
        for name, (with_metrics, artifacts) in self.headline.items():  # e.g. the scores, the promotion decision
            result = summary.results.get(name)
            if result is None:
                continue
            if with_metrics:
                metrics.update({k: v for k, v in result.metrics.items() if not is_stage_metric(k)})
            for artifact in artifacts:
                if (Path(result.path) / artifact).is_file():
                    self.client.log_artifact(self.parent_id, str(Path(result.path) / artifact))
        log_metrics(self.client, self.parent_id, metrics)
        status = "KILLED" if interrupted else "FAILED" if summary.failed else "FINISHED"
        self.client.set_terminated(self.parent_id, status)


def run_workflow(config: WorkflowConfig, targets: list[str] | None = None, workflow_file: str = "",
                 force: tuple[str, ...] = (), quiet: bool = False) -> RunSummary:
    """Run the target stages (default: all) and whatever stale stages they need."""
    return run_nodes(config, build_plan(config), targets, workflow_file, force, quiet)


def forced_nodes(nodes: list[Node], force: tuple[str, ...]) -> set[str]:
    """The stages `--force` names (a stage instance, or every instance of a kind) and all downstream of
    them; an unknown name is a ConfigError listing the stages."""
    unknown = [name for name in force if not any(name in (n.name, n.kind) for n in nodes)]
    if unknown:
        raise ConfigError(f"--force {unknown[0]}: no such stage in this workflow (its stages: "
                          f"{', '.join(n.name for n in nodes)})")
    return downstream(nodes, {n.name for n in nodes if n.name in force or n.kind in force})


def run_nodes(config: WorkflowConfig, nodes: list[Node], targets: list[str] | None = None,
              workflow_file: str = "", force: tuple[str, ...] = (), quiet: bool = False) -> RunSummary:
    """Run a stage graph (nodes in topological order): the targets and whatever stale stages they need;
    the forced stages (and downstream) run again even when cached, their new outputs replacing the old."""
    started = time.perf_counter()
    keys = compute_keys(nodes)
    forced = forced_nodes(nodes, force)
    wanted = needed_nodes(nodes, keys, config, targets or [n.name for n in nodes], forced)
    to_run = [n for n in wanted if n.name in forced or not is_cached(config, n.name, keys[n.name])]
    log.info("%d stage(s) selected, %d cached, %d to run", len(wanted), len(wanted) - len(to_run), len(to_run))

    runs = _StageRuns(config, targets, workflow_file)
    summary = RunSummary(runs.parent_id)
    try:
        _run_stages(config, wanted, to_run, keys, runs, summary, quiet)
    except BaseException:
        summary.seconds = time.perf_counter() - started
        runs.finish(summary, len(to_run), interrupted=True)
        raise
    summary.seconds = time.perf_counter() - started
    runs.finish(summary, len(to_run))
    return summary


# Ray Train's controller gives up on a worker group that waits more than 60 s for resources; a
# fine-tuning stage queued behind others on a busy cluster waits longer than that, by design.
STAGE_ENV = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "86400"}
PROGRESS_EVERY_S = 2.0  # how often the driver prints the running stages' new progress lines


def _training_cpus(ray) -> float:
    """CPUs that training stages may hold at once: the cluster's, less one left to data and evaluate
    tasks. A pretraining's Ray Data reads need a CPU beside its trainers: two pretrainings that held
    every CPU would each wait on their reads for ever (Ray Data gives up after 30 minutes)."""
    return max(1.0, ray.cluster_resources().get("CPU", 1.0) - 1)


def _run_stages(config: WorkflowConfig, wanted: list[Node], to_run: list[Node], keys: dict[str, str],
                runs: _StageRuns, summary: RunSummary, quiet: bool = False) -> None:
    """Cached stages are reported at once; the others become Ray tasks wired by their inputs'
    ObjectRefs, submitted as soon as their inputs are submitted (a training stage: once its inputs are
    done and its workers' CPUs are free, so it never holds them while it waits), and collected in
    completion order; a failure marks its run and everything downstream of it."""
    ray = ray_module(config, quiet) if to_run else None
    lines = StageLines(wanted)
    handles: dict = {}
    waiting: list[Node] = []
    for node in wanted:
        key = keys[node.name]
        output = stage_dir(config, node.name, key)
        cached = node not in to_run
        runs.start_child(node, key, output, cached, _lineage(config, node, keys))
        if cached:
            handles[node.name] = summary.results[node.name] = StageResult.load(output)
            runs.finish_cached_child(node.name, key, summary.results[node.name])
            lines.cached(node, summary.results[node.name])
        else:
            waiting.append(node)
    if not waiting:
        return
    remote_execute = ray.remote(execute_node)
    budget = _training_cpus(ray)
    output_types = {node.name: node.stage.output for node in wanted}
    pending: dict = {}
    while waiting or pending:
        # Training stages are served first come, first served: once a ready one waits for CPUs, later ones
        # wait behind it, so fine-tunes freeing one CPU at a time never keep a pretraining from its two.
        held_back = False
        for node in list(waiting):
            failed = [name for name in node.inputs if name in summary.failed]
            if failed:
                waiting.remove(node)
                _fail(runs, summary, node, f"not run: upstream stage {failed[0]} failed")
                continue
            if not all(name in handles for name in node.inputs):
                continue
            workers = node.stage.training_workers(node)
            if workers:
                if not all(name in summary.results for name in node.inputs):
                    continue
                in_use = sum(n.stage.training_workers(n) for n in pending.values())
                if held_back or (in_use and in_use + workers > budget):  # alone, it may exceed the budget
                    held_back = True
                    if node.name not in summary.waited_for_cpus:
                        summary.waited_for_cpus.append(node.name)
                        log.info("stage %s waits for %d training CPUs (%d of %g in use)", node.name, workers,
                                 in_use, budget)
                    continue
            forced = is_cached(config, node.name, keys[node.name])  # run all the same: `--force`, built anew
            progress_file = _fresh_progress_file(config, node.name, keys[node.name])
            env = StageEnv(keys[node.name], runs.context.for_stage(runs.children[node.name]), Path(config.data_root),
                           config.dataset_path("."), config.train_storage, config.paths,
                           (earlier_outputs(config.paths, node) if node.stage.incremental and not forced else ()),
                           replace=forced, progress_file=progress_file)
            ref = remote_execute.options(num_cpus=node.stage.num_cpus, name=node.name, max_retries=0,
                                         runtime_env={"env_vars": STAGE_ENV}).remote(
                node, keys[node.name], env, {name: output_types[name] for name in node.inputs},
                *[handles[name] for name in node.inputs])
            handles[node.name], pending[ref] = ref, node
            waiting.remove(node)
            stage_state.mark_running(config.paths, node.name, keys[node.name])
            lines.submitted(node, progress_file, ready=all(name in summary.results for name in node.inputs))
        if not pending:
            continue  # every remaining stage was just marked not run
        done, _ = ray.wait(list(pending), num_returns=1, timeout=PROGRESS_EVERY_S)
        lines.poll()
        if not done:
            continue
        node = pending.pop(done[0])
        lines.stopped(node.name)
        with contextlib.suppress(OSError):
            config.paths.stage_progress(node.name, keys[node.name]).unlink(missing_ok=True)
        try:
            result = ray.get(done[0])
        except Exception as exc:  # the stage failed, or an upstream stage did
            upstream_failed = [name for name in node.inputs if name not in summary.results]
            if upstream_failed:
                stage_state.clear(config.paths, node.name, keys[node.name])
                _fail(runs, summary, node, f"not run: upstream stage {upstream_failed[0]} failed")
            else:
                _fail(runs, summary, node, _root_error(exc))
                stage_state.mark_failed(config.paths, node.name, keys[node.name], summary.failed[node.name])
            continue
        stage_state.clear(config.paths, node.name, keys[node.name])
        summary.results[node.name] = result
        runs.finish_child(node.name, result)
        lines.finished(node, result, summary.results)


def _fresh_progress_file(config: WorkflowConfig, name: str, key: str) -> Path | None:
    """An empty place for the stage's progress lines; None (no lines on the terminal) when the workdir
    cannot take it."""
    path = config.paths.stage_progress(name, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("stage %s: no progress lines (%s)", name, exc)
        return None
    return path


def _lineage(config: WorkflowConfig, node: Node, keys: dict[str, str]) -> list[dict]:
    """What a stage reads, as MLflow dataset inputs: its upstream stages' outputs (digest: their stage
    key, a hash of everything that defines them) and its raw files (digest: a hash of their path,
    size and mtime; one entry per file, or one for the whole set when there are many)."""
    context = node.stage.dataset_context or node.kind
    items = [{"name": name, "path": stage_dir(config, name, keys[name]), "digest": keys[name], "context": context}
             for name in node.inputs]
    groups = [[f] for f in node.files] if len(node.files) <= 10 else [list(node.files)] if node.files else []
    for files in groups:
        digest = hashlib.sha256(json.dumps([fingerprint(f) for f in files]).encode()).hexdigest()[:16]
        path = files[0] if len(files) == 1 else os.path.commonpath(files)
        name = Path(files[0]).name if len(files) == 1 else f"{node.kind}-files ({len(files)})"
        items.append({"name": name, "path": path, "digest": digest, "context": context})
    return items


def _fail(runs: _StageRuns, summary: RunSummary, node: Node, reason: str) -> None:
    summary.failed[node.name] = reason
    runs.fail_child(node.name, reason)
    log.error("stage %s failed: %s", node.name, reason)


STATUSES = ("cached", "running", "interrupted", "failed", "stale")  # what `bioray status` shows


def stage_status(config: WorkflowConfig) -> list[dict]:
    """Every stage with its key, output location and status: cached (a committed output), running,
    interrupted or failed (bioray.pipeline.stage_state, with the error), else stale."""
    nodes = build_plan(config)
    keys = compute_keys(nodes)
    rows = []
    for node in nodes:
        key = keys[node.name]
        row = {"stage": node.name, "status": "stale", "key": key, "output": str(stage_dir(config, node.name, key))}
        if is_cached(config, node.name, key):
            row["status"] = "cached"
        elif (state := stage_state.read(config.paths, node.name, key)) is not None:
            row["status"] = state["status"]
            if state.get("error"):
                row["error"] = state["error"]
        rows.append(row)
    return rows

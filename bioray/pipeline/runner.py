"""Run a workflow's stage DAG on Ray: which stages run, and when each starts.

Ray is the scheduler: each stage to run is a Ray task whose arguments are its upstream stages'
ObjectRefs, so Ray starts it when they are done and runs independent stages (fine-tuning per
dataset and seed) in parallel. Cached stages are not submitted at all. Each transition is a stage
event (bioray.pipeline.events) that the MLflow runs (stage_runs), the state files (stage_state) and
the terminal lines (terminal) follow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bioray.config import ConfigError, WorkflowConfig
from bioray.pipeline.events import Heartbeat, StageCached, StageFailed, StageFinished, StageQueued, StageStarted
from bioray.pipeline.execute import StageResult, earlier_outputs, execute_node
from bioray.pipeline.plan import build_plan, compute_keys, downstream, is_cached, needed_nodes, stage_dir
from bioray.pipeline.preemption import DriverStop
from bioray.pipeline.stage_runs import StageRuns
from bioray.pipeline.stage_state import StateFiles
from bioray.pipeline.stages.base import Node, StageEnv
from bioray.pipeline.terminal import StageLines, say
from bioray.storage import StorageError, check_storage
from bioray.tracking.context import RunContext

log = logging.getLogger(__name__)


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
    if any(n.kind == "pretrain" for n in to_run):  # an unusable S3 store: one line now, not after ingest
        try:
            check_storage(config.train_storage, config.storage_endpoint)
        except StorageError as error:
            raise ConfigError(str(error)) from None

    runs = StageRuns(config, keys, targets, workflow_file)
    listeners = (runs, StateFiles(config.paths), StageLines(wanted))

    def follow(event) -> None:
        for listener in listeners:
            listener(event)

    summary = RunSummary(runs.parent_id)
    interrupted = True  # until the stages are through: an exception or Ctrl-C kills the parent run
    try:
        _run_stages(config, wanted, to_run, keys, summary, follow, runs.stage_context, quiet)
        interrupted = False
    finally:
        summary.seconds = time.perf_counter() - started
        runs.end(summary.seconds, interrupted)
    return summary


# Ray Train's controller gives up on a worker group that waits more than 60 s for resources; a
# training stage queued behind others on a busy cluster waits longer than that, by design.
STAGE_ENV = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "86400"}
PROGRESS_EVERY_S = 2.0  # how often the driver prints the running stages' new progress lines


def _training_cpus(ray) -> float:
    """CPUs that training stages may hold at once: the cluster's, less one left to data and evaluate
    tasks. A pretraining's Ray Data reads need a CPU beside its trainers: two pretrainings that held
    every CPU would each wait on their reads for ever (Ray Data gives up after 30 minutes)."""
    return max(1.0, ray.cluster_resources().get("CPU", 1.0) - 1)


def _run_stages(config: WorkflowConfig, wanted: list[Node], to_run: list[Node], keys: dict[str, str],
                summary: RunSummary, follow: Callable, stage_context: Callable[[str], RunContext],
                quiet: bool = False) -> None:
    """Cached stages are reported at once; the others become Ray tasks wired by their inputs'
    ObjectRefs, submitted as soon as their inputs are submitted (a training stage: once its inputs are
    done and its workers' CPUs are free, so it never holds them while it waits), and collected in
    completion order; a failure fails everything downstream of it. `follow` gets each stage event;
    `stage_context` gives a stage's MLflow run."""
    ray = ray_module(config, quiet) if to_run else None
    handles: dict = {}
    waiting: list[Node] = []
    for node in wanted:
        if node in to_run:
            waiting.append(node)
            follow(StageQueued(node, keys[node.name]))
        else:
            handles[node.name] = summary.results[node.name] = StageResult.load(stage_dir(config, node.name,
                                                                                         keys[node.name]))
            follow(StageCached(node, keys[node.name], summary.results[node.name]))
    if not waiting:
        return
    from bioray.train.worker_group import WorkerGroups

    groups = WorkerGroups()  # long-lived training workers, lent to one stage at a time
    stop = DriverStop()  # SIGTERM: checkpoint, then stop
    try:
        _submit_and_collect(ray, config, wanted, waiting, keys, summary, follow, stage_context, handles, groups, stop)
    finally:
        stop.close()
        groups.release()


def _submit_and_collect(ray, config: WorkflowConfig, wanted: list[Node], waiting: list[Node], keys: dict[str, str],
                        summary: RunSummary, follow: Callable, stage_context: Callable[[str], RunContext],
                        handles: dict, groups, stop: DriverStop) -> None:
    remote_execute = ray.remote(execute_node)
    budget = _training_cpus(ray)
    output_types = {node.name: node.stage.output for node in wanted}
    pending: dict = {}  # ref -> (node, the worker group lent to it)
    attempts: dict[str, int] = {}
    finished: list[StageFinished] = []
    try:
        while waiting or pending or finished:
            if stop.requested:
                stop.hold(waiting)  # nothing new starts
                stop.settle([n for n, _ in pending.values()])  # raises once nothing is left to wait for
            # Training stages are served first come, first served: once a ready one waits for CPUs, later ones
            # wait behind it, so fine-tunes freeing one CPU at a time never keep a pretraining from its two.
            held_back = False
            groups.release(keep={s for n in waiting if (s := n.stage.worker_scaling(n))})  # none waits for these
            for node in list(waiting):
                failed = [name for name in node.inputs if name in summary.failed]
                if failed:
                    waiting.remove(node)
                    _fail(summary, follow, StageFailed(node, keys[node.name], _not_run(failed[0]), False, failed[0]))
                    continue
                if not all(name in handles for name in node.inputs):
                    continue
                workers, scaling = node.stage.training_workers(node), node.stage.worker_scaling(node)
                if workers:
                    if not all(name in summary.results for name in node.inputs):
                        continue
                    in_use = sum(n.stage.training_workers(n) for n, _ in pending.values())
                    if held_back or (in_use and in_use + workers > budget):  # alone, it may exceed the budget
                        held_back = True
                        if node.name not in summary.waited_for_cpus:
                            summary.waited_for_cpus.append(node.name)
                            log.info("stage %s waits for %d training CPUs (%d of %g in use)", node.name, workers,
                                     in_use, budget)
                        continue
                    if not (scaling and groups.has_idle(scaling)) and in_use + groups.idle_cpus + workers > budget:
                        groups.release()  # idle workers of another scaling give their CPUs back
                group = groups.lend(scaling) if scaling else None
                forced = is_cached(config, node.name, keys[node.name])  # run all the same: `--force`, built anew
                progress_file = _fresh_progress_file(config, node.name, keys[node.name])
                env = StageEnv(keys[node.name], stage_context(node.name), Path(config.data_root),
                               config.dataset_path("."), config.train_storage, config.paths,
                               (earlier_outputs(config.paths, node) if node.stage.incremental and not forced else ()),
                               replace=forced, progress_file=progress_file, workers=group, ready_at=time.time(),
                               storage_endpoint=config.storage_endpoint)
                args = (node, keys[node.name], env, {name: output_types[name] for name in node.inputs},
                        *[handles[name] for name in node.inputs])
                if group is not None:  # on the group's rank 0
                    ref = group.execute(execute_node, *args)
                else:
                    ref = remote_execute.options(num_cpus=node.stage.num_cpus, name=node.name, max_retries=0,
                                                 runtime_env={"env_vars": STAGE_ENV}).remote(*args)
                handles[node.name], pending[ref] = ref, (node, group)
                waiting.remove(node)
                if node.name not in attempts:
                    follow(StageStarted(node, keys[node.name], progress_file))
                attempts[node.name] = attempts.get(node.name, 0) + 1
            for event in finished:  # its tracking and terminal lines wait until its group has its next stage
                follow(event)
                _forget_progress(config, event.node, event.key)
            finished.clear()
            if not pending:
                continue  # every remaining stage was just marked not run
            done, _ = ray.wait(list(pending), num_returns=1, timeout=PROGRESS_EVERY_S)
            follow(Heartbeat())
            if not done:
                continue
            node, group = pending.pop(done[0])
            key = keys[node.name]
            try:
                result = ray.get(done[0])
            except Exception as exc:  # the stage failed, or an upstream stage did
                if group is not None:
                    group.shutdown()  # its ranks may be stuck in a collective, or dead
                if stop.requested:  # stopped (checkpointed) on SIGTERM: neither failed nor finished
                    stop.record(node, _root_error(exc))
                    continue
                upstream = next((name for name in node.inputs if name not in summary.results), None)
                if upstream is None and _crashed(exc) and attempts[node.name] <= node.stage.retries(node):
                    log.warning("stage %s: %s; running it again on new workers (attempt %d of %d)", node.name,
                                _root_error(exc), attempts[node.name] + 1, node.stage.retries(node) + 1)
                    for stale in config.paths.stage_family(node.name).glob(f".tmp-{key}-*"):  # a killed attempt's
                        config.paths.remove(stale)
                    del handles[node.name]  # stages downstream wait for the new attempt
                    waiting.insert(0, node)
                    continue
                if upstream is not None and upstream not in summary.failed:  # an input is being run again
                    waiting.append(node)
                    continue
                _fail(summary, follow, StageFailed(node, key, _not_run(upstream) if upstream else _root_error(exc),
                                                   True, upstream))
                _forget_progress(config, node, key)
            else:
                if group is not None:
                    groups.take_back(group)
                summary.results[node.name] = result
                finished.append(StageFinished(node, key, result))  # told once the next stages are submitted
        stop.settle([])
    finally:
        for event in finished:  # interrupted: what did finish is still told
            follow(event)
        for _, group in pending.values():  # and the groups still lent out go
            if group is not None:
                group.shutdown()


def _forget_progress(config: WorkflowConfig, node: Node, key: str) -> None:
    with contextlib.suppress(OSError):  # only now: the terminal read its last progress lines
        config.paths.stage_progress(node.name, key).unlink(missing_ok=True)


def _crashed(exc: Exception) -> bool:
    """A crash (a training worker or the stage's own process died), not an error of the code: worth a rerun."""
    from ray.exceptions import NodeDiedError, RayActorError, WorkerCrashedError

    from bioray.train.worker_group import WorkerCrashed

    crashes = (WorkerCrashed, RayActorError, WorkerCrashedError, NodeDiedError)
    return isinstance(exc, crashes) or isinstance(getattr(exc, "cause", None), crashes)


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


def _not_run(upstream: str) -> str:
    return f"not run: upstream stage {upstream} failed"


def _fail(summary: RunSummary, follow: Callable, event: StageFailed) -> None:
    summary.failed[event.node.name] = event.error
    follow(event)
    log.error("stage %s failed: %s", event.node.name, event.error)

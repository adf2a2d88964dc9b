"""Run a workflow's stage DAG on Ray, one MLflow parent run with a child run per stage.

Ray is the scheduler: each stage to run is a Ray task whose arguments are its upstream stages'
ObjectRefs, so Ray starts it when they are done and runs independent stages (fine-tuning per
dataset and seed) in parallel. Cached stages are not submitted at all.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bioray.config import WorkflowConfig
from bioray.pipeline.plan import build_plan, compute_keys, is_cached, needed_nodes, stage_dir
from bioray.pipeline.stages import StageResult, execute_node
from bioray import tracking

log = logging.getLogger(__name__)

ARTIFACT_SUFFIXES = (".json", ".md", ".png", ".yaml")


@dataclass
class RunSummary:
    parent_run_id: str
    results: dict[str, StageResult] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _start_ray(config: WorkflowConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:  # logical CPUs: training workers, data tasks and stage tasks share the cores
        ray.init(num_cpus=config.ray.num_cpus or max(4, os.cpu_count() or 1))


def _log_small_outputs(client, run_id: str, directory: Path) -> None:
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in ARTIFACT_SUFFIXES and path.stat().st_size < 5_000_000:
            client.log_artifact(run_id, str(path))


def _finish_child(client, run_id: str, result: StageResult) -> None:
    tracking.log_metrics(client, run_id, {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))})
    client.set_tag(run_id, "bioray.output", result.path)
    _log_small_outputs(client, run_id, Path(result.path))
    client.set_terminated(run_id, "FINISHED")


def _last_line(exc: Exception) -> str:
    """The root error of a (Ray-wrapped) exception, one line."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _parent_metrics(results: dict[str, StageResult]) -> dict[str, float]:
    """Test scores per dataset on the parent run: mean over seeds (and std when there are several)."""
    per_dataset: dict[str, dict[str, list[float]]] = {}
    for name, result in results.items():
        if name.startswith("evaluate/"):
            dataset = name.split("/")[1]
            for metric, value in result.metrics.items():
                per_dataset.setdefault(dataset, {}).setdefault(metric, []).append(value)
    metrics = {}
    for dataset, values in per_dataset.items():
        for metric, scores in values.items():
            metrics[f"{dataset}/{metric}"] = statistics.fmean(scores)
            if len(scores) > 1:
                metrics[f"{dataset}/{metric}_std"] = statistics.stdev(scores)
    return metrics


def run_workflow(config: WorkflowConfig, targets: list[str] | None = None, workflow_file: str = "") -> RunSummary:
    started = time.perf_counter()
    nodes = build_plan(config)
    keys = compute_keys(nodes)
    wanted = needed_nodes(nodes, keys, config, targets or [n.name for n in nodes])
    to_run = [n for n in wanted if not is_cached(config, n.name, keys[n.name])]
    log.info("%d stage(s) selected, %d cached, %d to run", len(wanted), len(wanted) - len(to_run), len(to_run))

    uri = tracking.tracking_uri_for(config.tracking.uri, config.workdir_path)
    config.workdir_path.mkdir(parents=True, exist_ok=True)
    client = tracking.configure(uri)
    experiment_id = tracking.ensure_experiment(client, config.tracking.experiment, config.workdir_path)
    tags = tracking.common_tags()
    parent = client.create_run(experiment_id, run_name=config.name,
                               tags={**tags, "bioray.workflow": workflow_file, "bioray.targets": ",".join(targets or ["all"])})
    parent_id = parent.info.run_id
    summary = RunSummary(parent_id)
    resolved = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    client.log_text(parent_id, resolved, "workflow.resolved.yaml")
    tracking.log_params_and_tags(client, parent_id, {"workflow": config.name, "workdir": str(config.workdir_path)}, {})

    if to_run:
        _start_ray(config)
        import ray
        remote_execute = ray.remote(execute_node)

    pending, handles, child_ids = {}, {}, {}
    config_json = config.model_dump_json()
    for node in wanted:
        key = keys[node.name]
        cached = node not in to_run
        child = client.create_run(experiment_id, run_name=node.name, tags={
            **tags, "mlflow.parentRunId": parent_id, "bioray.stage": node.name, "bioray.stage_kind": node.kind,
            "bioray.stage_key": key, "bioray.cache": "hit" if cached else "miss",
            "bioray.output": str(stage_dir(config, node.name, key))})
        child_ids[node.name] = child.info.run_id
        tracking.log_params_and_tags(client, child.info.run_id, tracking.flatten(node.params), {})
        if cached:
            result = StageResult.load(stage_dir(config, node.name, key))
            handles[node.name] = result
            summary.results[node.name] = result
            _finish_child(client, child.info.run_id, result)
            log.info("stage %-32s cached (%s)", node.name, key)
            continue
        upstream = [handles[name] for name in node.inputs]
        ref = remote_execute.options(num_cpus=node.num_cpus, name=node.name, max_retries=0).remote(
            node, key, config_json, child.info.run_id, uri, *upstream)
        handles[node.name] = ref
        pending[ref] = (node, time.perf_counter())

    while pending:
        import ray
        done, _ = ray.wait(list(pending), num_returns=1)
        node, submitted = pending.pop(done[0])
        run_id = child_ids[node.name]
        try:
            result = ray.get(done[0])
        except Exception as exc:  # the stage failed, or an upstream stage did
            upstream_failed = [name for name in node.inputs if name in summary.failed]
            summary.failed[node.name] = (f"not run: upstream stage {upstream_failed[0]} failed" if upstream_failed
                                         else _last_line(exc))
            client.set_tag(run_id, "bioray.error", summary.failed[node.name][:5000])
            client.set_terminated(run_id, "FAILED")
            log.error("stage %s failed: %s", node.name, summary.failed[node.name])
            continue
        summary.results[node.name] = result
        _finish_child(client, run_id, result)
        log.info("stage %-32s done in %.1fs (%s)", node.name, time.perf_counter() - submitted, result.key)

    tracking.log_metrics(client, parent_id, _parent_metrics(summary.results))
    summary.seconds = time.perf_counter() - started
    tracking.log_metrics(client, parent_id, {"pipeline/seconds": summary.seconds,
                                             "pipeline/stages_run": len(to_run),
                                             "pipeline/stages_cached": len(wanted) - len(to_run)})
    client.set_terminated(parent_id, "FAILED" if summary.failed else "FINISHED")
    return summary


def stage_status(config: WorkflowConfig) -> list[dict]:
    """Every stage with its key, output location and whether it is cached."""
    nodes = build_plan(config)
    keys = compute_keys(nodes)
    return [{"stage": n.name, "status": "cached" if is_cached(config, n.name, keys[n.name]) else "stale",
             "key": keys[n.name], "output": str(stage_dir(config, n.name, keys[n.name]))} for n in nodes]

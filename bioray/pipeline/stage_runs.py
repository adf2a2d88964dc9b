"""The MLflow side of a pipeline run: a parent run, and a child run per selected stage that follows the
runner's stage events (created when the stage is selected, finished with its metrics and small outputs,
failed with its error, killed when the driver stops before it ends)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import yaml

from bioray.config import WorkflowConfig
from bioray.metric_names import is_stage_metric
from bioray.pipeline.events import StageCached, StageFailed, StageFinished, StageQueued
from bioray.pipeline.execute import StageResult
from bioray.pipeline.plan import fingerprint, stage_dir
from bioray.pipeline.stages.base import Node
from bioray.tracking.artifacts import SMALL_BYTES, log_output_file
from bioray.tracking.context import RunContext
from bioray.tracking.outbox import SPILL_FILE, replay_spilled
from bioray.tracking.runs import common_tags, flatten, log_lineage, log_metrics, log_params_and_tags
from bioray.tracking.store import activate, ensure_experiment, tracking_uri_for

log = logging.getLogger(__name__)

ARTIFACT_SUFFIXES = (".json", ".md", ".png", ".yaml")


class StageRuns:
    """The parent run (created here, ended by `end`) and the stages' child runs (by their events)."""

    def __init__(self, config: WorkflowConfig, keys: dict[str, str], targets: list[str] | None, workflow_file: str):
        self.config, self.keys = config, keys
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
        self.nodes: dict[str, Node] = {}
        self.results: dict[str, StageResult] = {}  # stages that ended well (run or cached)
        self.failed: set[str] = set()

    def __call__(self, event) -> None:
        match event:
            case StageCached(node, key, result):
                self._start_child(node, key, cached=True)
                self.results[node.name] = result
                # its run points at the run that produced its output instead of copying its metrics and
                # artifacts; when no run of this experiment did (a copied workdir, another store), it carries them
                producer = self.client.search_runs(
                    [self.context.experiment_id], f"tags.`bioray.stage_key` = '{key}' and tags.`bioray.cache` = "
                    "'miss' and attributes.status = 'FINISHED'", max_results=1, order_by=["attributes.start_time DESC"])
                if producer:
                    self.client.set_tag(self.children[node.name], "bioray.produced_by", producer[0].info.run_id)
                    self.client.set_terminated(self.children[node.name], "FINISHED")
                else:
                    self._finish_child(node.name, result)
            case StageQueued(node, key):
                self._start_child(node, key, cached=False)
            case StageFinished(node, _, result):
                self._finish_child(node.name, result)
            case StageFailed(node, error=error):
                self.failed.add(node.name)
                self.client.set_tag(self.children[node.name], "bioray.error", error[:5000])
                self.client.set_terminated(self.children[node.name], "FAILED")

    def stage_context(self, name: str) -> RunContext:
        """What a stage's run function tracks into: its child run."""
        return self.context.for_stage(self.children[name])

    def _start_child(self, node: Node, key: str, cached: bool) -> None:
        child = self.client.create_run(self.context.experiment_id, run_name=node.name, tags={
            **self.tags, "mlflow.parentRunId": self.parent_id, "bioray.stage": node.name,
            "bioray.stage_kind": node.kind, "bioray.stage_key": key, "bioray.cache": "hit" if cached else "miss",
            "bioray.output": str(stage_dir(self.config, node.name, key))})
        self.children[node.name], self.nodes[node.name] = child.info.run_id, node
        log_params_and_tags(self.client, child.info.run_id, flatten(node.params_json() or {}), {})
        log_lineage(self.client, child.info.run_id, lineage(self.config, node, self.keys))

    def _finish_child(self, name: str, result: StageResult) -> None:
        """Its metrics, its small reports and the large files its stage kind names."""
        self.results[name] = result
        run_id, output = self.children[name], Path(result.path)
        if (output / SPILL_FILE).is_file():  # the tracking server was down while the stage's workers logged
            replayed = replay_spilled(self.client, output / SPILL_FILE)
            self.client.set_tag(run_id, "bioray.tracking_replayed", str(replayed))
            log.warning("stage %s: %d tracking write(s) made while MLflow was unreachable sent now", name, replayed)
        log_metrics(self.client, run_id, result.metrics)  # keeps the numeric ones
        large = self.nodes[name].stage.large_artifacts
        for path in sorted(output.iterdir()):
            if path.is_file() and path.suffix in ARTIFACT_SUFFIXES and path.stat().st_size < SMALL_BYTES \
                    and path.name not in large:
                self.client.log_artifact(run_id, str(path))
        for file in large:
            if (output / file).is_file():
                log_output_file(self.client, run_id, output / file)
        self.client.set_terminated(run_id, "FINISHED")

    def end(self, seconds: float, interrupted: bool = False) -> None:
        """The parent run's metrics and headline outputs, and its status: KILLED when `interrupted`, else
        FAILED when a stage failed, else FINISHED; a child run still going when the driver stops is KILLED."""
        for name, run_id in self.children.items():
            if name not in self.results and name not in self.failed:
                self.client.set_terminated(run_id, "KILLED")
        cached = sum(result.cached for result in self.results.values())
        metrics = {"pipeline/seconds": seconds, "pipeline/stages_run": len(self.children) - cached,
                   "pipeline/stages_cached": cached}
        for name, node in self.nodes.items():  # e.g. the scores, the promotion decision
            if (result := self.results.get(name)) is None:
                continue
            if node.stage.parent_metrics:
                metrics.update({k: v for k, v in result.metrics.items() if not is_stage_metric(k)})
            for artifact in node.stage.parent_artifacts:
                if (Path(result.path) / artifact).is_file():
                    self.client.log_artifact(self.parent_id, str(Path(result.path) / artifact))
        log_metrics(self.client, self.parent_id, metrics)
        status = "KILLED" if interrupted else "FAILED" if self.failed else "FINISHED"
        self.client.set_terminated(self.parent_id, status)


def lineage(config: WorkflowConfig, node: Node, keys: dict[str, str]) -> list[dict]:
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

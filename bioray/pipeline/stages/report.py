"""Stage report: every dataset's score beside the published numbers, a BLURB-style macro, a plot."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from bioray.config import WorkflowConfig
from bioray.pipeline.stages.base import Node, Stage, StageEnv


class ReportParams(BaseModel):
    datasets: dict[str, dict[str, str]]  # name -> {task, benchmark}
    evaluations: dict[str, dict]  # evaluate stage name -> {dataset, seed}


class Report(Stage):
    kind = "report"
    help = "Scores beside the published BERT / BioBERT / PubMedBERT numbers, as markdown and a plot."
    parent_metrics = True  # the test scores per dataset (mean over seeds) are the pipeline run's headline
    parent_artifacts = ("report.md", "scores.png")

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        datasets = {d.name: {"task": d.task, "benchmark": d.benchmark or d.name} for d in config.finetune.datasets}
        evaluations = {n.name: {"dataset": n.params.dataset.name, "seed": n.params.seed}
                       for n in upstream if n.kind == "evaluate"}
        return [Node("report", self, tuple(evaluations), ReportParams(datasets=datasets, evaluations=evaluations))]

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.tasks.report import run_report

        scores = [{**node.params.evaluations[name], "metrics": result.metrics} for name, result in inputs.items()]
        return run_report(node.params.datasets, scores, output)

"""Stage report: every encoder's score on every dataset beside the published numbers, a BLURB-style
macro, a plot."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from bioray.config import WorkflowConfig
from bioray.pipeline.stages.arms import Coordinate, named_arms
from bioray.pipeline.stages.base import Node, Stage, StageEnv
from bioray.tasks.catalog import task_for
from bioray.tasks.published import benchmark_of


class ReportParams(BaseModel):
    datasets: dict[str, dict[str, str | None]]  # name -> {task, metric, benchmark}
    evaluations: dict[str, Coordinate]  # evaluate stage name -> where it sits
    arms: list[str] | None = None  # several encoders: one column each, in this order
    nondeterministic: dict[str, str] = {}  # stages before it whose output may differ between runs: why


class Report(Stage):
    kind = "report"
    Params = ReportParams
    headline = ("report/blurb_style_macro",)
    help = "Scores beside the published BERT / BioBERT / PubMedBERT numbers, as markdown and a plot."
    parent_metrics = True  # the test scores per dataset (mean over seeds) are the pipeline run's headline
    parent_artifacts = ("report.md", "scores.png")

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        datasets = {d.name: {"task": d.task, "metric": task_for(d).metric, "benchmark": benchmark_of(d)}
                    for d in config.finetune.datasets}
        evaluations = {n.name: n.params.at for n in upstream if n.kind == "evaluate"}
        arms = [arm.name for arm in config.arms] if named_arms(config) else None
        reasons = {n.name: why for n in upstream if (why := n.stage.nondeterministic(n))}
        params = ReportParams(datasets=datasets, evaluations=evaluations, arms=arms, nondeterministic=reasons)
        return [Node("report", self, {"evaluations": tuple(evaluations)}, params)]

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.tasks.report import run_report

        scores = [{**node.params.evaluations[name].model_dump(), "metrics": result.metrics}
                  for name, result in inputs["evaluations"].items()]
        return run_report(node.params.datasets, scores, output, arms=node.params.arms,
                          nondeterministic=node.params.nondeterministic)

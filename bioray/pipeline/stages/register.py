"""Stage register: the evaluated encoder into the MLflow model registry, then the champion/challenger gate."""

from __future__ import annotations

from pathlib import Path

from bioray.config import WorkflowConfig
from bioray.pipeline.stages.base import Node, Stage, StageEnv


class Register(Stage):
    kind = "register"
    help = "Register the evaluated encoder in the MLflow model registry; champion/challenger gate."
    parent_artifacts = ("promotion.md",)

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        evaluations = tuple(n.name for n in upstream if n.kind == "evaluate")
        return [Node("register", self, ("pretrain", *evaluations, "report"), config.registry)]

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.pipeline.register import run_register

        scores = {f"{name.split('/', 1)[1]}/{metric}": value for name, result in inputs.items()
                  if name.startswith("evaluate/") for metric, value in result.metrics.items()
                  if not metric.startswith("stage/")}
        report = {k: v for k, v in inputs["report"].metrics.items() if k.startswith("report/")}
        return run_register(node.params, encoder_dir=inputs["pretrain"].model, scores=scores, report_scores=report,
                            context=env.context, output=output)

"""Stage register: the registered encoder arm into the MLflow model registry, then the champion/challenger
gate on its report scores."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from bioray.config import RegisterConfig, TaskModelsConfig, WorkflowConfig
from bioray.metric_names import is_stage_metric, report_prefix
from bioray.pipeline.stages.arms import Coordinate, encoder_source, named_arms, registered_arm
from bioray.pipeline.stages.base import Node, Stage, StageEnv


class RegisterParams(BaseModel):
    registry: RegisterConfig
    arm: str | None = None  # several encoders: the one registered (its scores decide the gate)
    encoder_model: str = "model"
    evaluations: dict[str, Coordinate]  # its arm's evaluate stage names -> where each sits


class Register(Stage):
    kind = "register"
    Params = RegisterParams
    headline = ("register/version", "gate/promoted")
    help = "Register the evaluated encoder in the MLflow model registry; champion/challenger gate."
    parent_artifacts = ("promotion.md",)

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        if not config.registry.enabled:
            return []
        arm = registered_arm(config)
        source, model = encoder_source(config, arm)
        evaluations = {n.name: n.params.at for n in upstream if n.kind == "evaluate" and n.params.at.arm == arm.name}
        # the encoder's registration reads nothing of task_models: a change there must not re-register it
        registry = config.registry.model_copy(update={"task_models": TaskModelsConfig()})
        params = RegisterParams(registry=registry, arm=arm.name if named_arms(config) else None,
                                encoder_model=model, evaluations=evaluations)
        return [Node("register", self, {"encoder": source, "evaluations": tuple(evaluations), "report": "report"},
                     params)]

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.pipeline.register import run_register

        params: RegisterParams = node.params
        scores = {f"{at.label}/{metric}": value for name, at in params.evaluations.items()
                  for metric, value in inputs["evaluations"][name].metrics.items() if not is_stage_metric(metric)}
        arm_prefix = report_prefix(params.arm)  # the registered arm's report scores, as a single encoder's
        report = {report_prefix() + k.removeprefix(arm_prefix): v for k, v in inputs["report"].metrics.items()
                  if k.startswith(arm_prefix)}
        return run_register(params.registry, encoder_dir=inputs["encoder"].path / params.encoder_model,
                            scores=scores, report_scores=report, context=env.context, output=output)

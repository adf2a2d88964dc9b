"""Stage register: the registered encoder arm into the MLflow model registry, then the champion/challenger
gate on its report scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from bioray.config import RegisterConfig, TaskModelsConfig, WorkflowConfig
from bioray.metric_names import is_stage_metric, report_prefix
from bioray.pipeline.stages.arms import Coordinate, encoder_source, named_arms, registered_arm
from bioray.pipeline.stages.base import Node, Stage, StageEnv

if TYPE_CHECKING:  # mlflow is imported by the run, not by planning
    from bioray.tracking.context import RunContext


class RegisterParams(BaseModel):
    registry: RegisterConfig
    arm: str | None = None  # several encoders: the one registered (its scores decide the gate)
    encoder_model: str = "model"
    evaluations: dict[str, Coordinate]  # its arm's evaluate stage names -> where each sits


class Register(Stage):
    kind = "register"
    Params = RegisterParams
    volatile = ("registration.json", "promotion.*")  # MLflow's version numbers and run ids
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
        params: RegisterParams = node.params
        scores = {f"{at.label}/{metric}": value for name, at in params.evaluations.items()
                  for metric, value in inputs["evaluations"][name].metrics.items() if not is_stage_metric(metric)}
        arm_prefix = report_prefix(params.arm)  # the registered arm's report scores, as a single encoder's
        report = {report_prefix() + k.removeprefix(arm_prefix): v for k, v in inputs["report"].metrics.items()
                  if k.startswith(arm_prefix)}
        return run_register(params.registry, encoder_dir=inputs["encoder"].path / params.encoder_model,
                            scores=scores, report_scores=report, context=env.context, output=output)


def run_register(config: RegisterConfig, *, encoder_dir: Path, scores: dict[str, float],
                 report_scores: dict[str, float], context: RunContext, output: Path) -> dict:
    """Log the encoder as an MLflow transformers model, register it, point the alias at it, and put it
    through the champion/challenger gate (the report's scores are the version's tags the gate reads).

    The HF files (config.json, model.safetensors, tokenizer) are under the model's `model/` folder:
    `AutoModel.from_pretrained(download_artifacts("models:/bioray-encoder@challenger") + "/model")`.
    """
    from bioray.pipeline.gate import run_gate
    from bioray.tracking.models import log_transformers_model
    from bioray.tracking.registry import register_version

    info = log_transformers_model(encoder_dir, context.run_id, "encoder")
    client = context.client
    registration = register_version(client, info.model_uri, config.model_name, config.alias,
                                    {**scores, **report_scores}, {"hf_subdir": "model"})
    version = registration["version"]
    (output / "registration.json").write_text(json.dumps(registration, indent=2))
    metrics = {"register/version": int(version)}
    if config.gate.enabled:
        decision = run_gate(client, config.model_name, version, config.gate, output)
        metrics["gate/promoted"] = int(decision["promote"])
        metrics.update({f"gate/{side}_score": decision[f"{side}_score"] for side in ("challenger", "champion")
                        if decision[f"{side}_score"] is not None})
    return metrics

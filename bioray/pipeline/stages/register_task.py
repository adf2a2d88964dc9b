"""Stage register-task: each dataset's fine-tuned models into the MLflow model registry as
`<prefix>-<task>-<dataset>` (bioray-ner-ncbi-disease), one version per evaluation (arm, fold, seed):
the fine-tuning run that evaluation scored on test (of a learning-rate grid, the run best on dev),
its test scores as version tags. The alias goes to the new version best on dev; choosing by the test
score would make the test set a development set. Served with `mlflow models serve -m
models:/bioray-ner-ncbi-disease@challenger` (bioray.tasks.serving)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from bioray.config import TaskModelsConfig, WorkflowConfig
from bioray.metric_names import best_dev, is_test_score
from bioray.pipeline.stages.arms import Coordinate, named_arms
from bioray.pipeline.stages.base import Node, Stage, StageEnv
from bioray.tasks import catalog
from bioray.tracking.registry import model_name, register_version

if TYPE_CHECKING:  # mlflow is imported by the run, not by planning
    from bioray.tracking.context import RunContext

log = logging.getLogger(__name__)


class Evaluation(BaseModel):
    """An evaluate stage instance of the dataset: where it sits, and the fine-tuning runs it chose from
    (one, or a learning-rate grid)."""

    at: Coordinate
    finetune: list[str]


class RegisterTaskParams(BaseModel):
    task_models: TaskModelsConfig
    model_name: str
    dataset: str
    task: str
    metric: str  # the entry's (Task.metric): a grid's run best on dev by it was scored; the best version gets the alias
    evaluations: dict[str, Evaluation]  # evaluate stage name -> its evaluation, in registration order
    named_arms: bool  # several encoders: each version is tagged with its arm


class RegisterTask(Stage):
    kind = "register-task"
    Params = RegisterTaskParams
    volatile = ("registration.json",)  # MLflow's version numbers and run ids
    headline = ("register_task/versions",)
    help = ("Register each dataset's evaluated fine-tuned models in the MLflow model registry "
            "(<prefix>-<task>-<dataset>); alias on the one best on dev.")

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        settings = config.registry.task_models
        if not (config.registry.enabled and settings.enabled):
            return []
        nodes = []
        for dataset in config.finetune.datasets:
            evaluated = [n for n in upstream if n.kind == "evaluate" and n.params.dataset.name == dataset.name]
            evaluations = {n.name: Evaluation(at=n.params.at, finetune=list(n.inputs)) for n in evaluated}
            params = RegisterTaskParams(task_models=settings,
                                        model_name=model_name(settings.prefix, dataset.task, dataset.name),
                                        dataset=dataset.name, task=dataset.task,
                                        metric=catalog.task_for(dataset).metric,
                                        evaluations=evaluations, named_arms=named_arms(config))
            needs = {"evaluations": tuple(evaluations), "runs": tuple(run for n in evaluated for run in n.inputs)}
            nodes.append(Node(f"register-task/{dataset.name}", self, needs, params))
        return nodes

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.pipeline.stages.evaluate import choose

        params: RegisterTaskParams = node.params
        candidates = []
        for name, evaluation in params.evaluations.items():
            chosen, tuned = choose({run: inputs["runs"][run] for run in evaluation.finetune}, params.metric)
            at = evaluation.at
            facts = {"dataset": at.dataset, "task": params.task, "seed": at.seed, "evaluation": name,
                     "finetune": chosen, "hf_subdir": "model"}
            facts.update({key: value for key, value in (("arm", at.arm if params.named_arms else None),
                                                        ("fold", at.fold)) if value is not None})
            candidates.append(TaskVersion(
                model_dir=tuned.model, logged_model=tuned.mlflow_model,
                dev=tuned.metrics.get(best_dev(params.metric)),
                scores={k: v for k, v in inputs["evaluations"][name].metrics.items() if is_test_score(k)},
                tags=facts))
        return run_register_tasks(params.model_name, params.task_models.alias, candidates, context=env.context,
                                  output=output)


@dataclass
class TaskVersion:
    """A fine-tuned model to register: its files, the model its run logged (if any), its scores."""

    model_dir: Path
    logged_model: str | None  # models:/<model id>, logged by its fine-tuning run
    dev: float | None  # its best dev score (primary metric), which picks the alias
    scores: dict[str, float]  # the test scores of its evaluation, as version tags
    tags: dict[str, object] = field(default_factory=dict)  # dataset, arm, seed, stages: lineage tags


def run_register_tasks(name: str, alias: str, candidates: list[TaskVersion], *, context: RunContext,
                       output: Path) -> dict:
    """One new version of `name` per candidate, in order, the alias on the one best on dev (the first of
    equals, or the first when none has a dev score). A candidate's model is the one its fine-tuning
    run logged when this store holds it (no second copy, and the version links to the run that trained
    it); otherwise it is logged here, on this stage's run. Writes registration.json."""
    from bioray.tasks.serving import log_task_model
    from bioray.tracking.registry import logged_model_exists

    client = context.client
    best = max(range(len(candidates)), key=lambda i: (candidates[i].dev is not None, candidates[i].dev or 0.0))
    versions = []
    for index, candidate in enumerate(candidates):
        uri = candidate.logged_model
        if not uri or not logged_model_exists(client, uri):
            if uri:
                log.warning("%s: %s is not in this tracking store; logging the model again", name, uri)
            uri = log_task_model(candidate.model_dir, context.run_id, model_name(str(candidate.tags["evaluation"]))
                                 ).model_uri
        record = register_version(client, uri, name, alias if index == best else None, candidate.scores,
                                  {key: str(value) for key, value in candidate.tags.items()})
        versions.append({**record, "dev": candidate.dev, "scores": candidate.scores, **candidate.tags})
    chosen = versions[best]["version"]
    (output / "registration.json").write_text(json.dumps({"model_name": name, "alias": alias, "alias_version": chosen,
                                                          "model_uri": f"models:/{name}@{alias}",
                                                          "versions": versions}, indent=2, default=str))
    return {"register_task/versions": len(versions), "register_task/alias_version": int(chosen)}

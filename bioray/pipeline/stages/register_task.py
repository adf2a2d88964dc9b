"""Stage register-task: each dataset's fine-tuned models into the MLflow model registry as
`<prefix>-<task>-<dataset>` (bioray-ner-ncbi-disease), one version per evaluation (arm, fold, seed):
the fine-tuning run that evaluation scored on test (of a learning-rate grid, the run best on dev),
its test scores as version tags. The alias goes to the new version best on dev; choosing by the test
score would make the test set a development set. Served with `mlflow models serve -m
models:/bioray-ner-ncbi-disease@challenger` (bioray.tasks.serving)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from bioray.config import TaskModelsConfig, WorkflowConfig
from bioray.metric_names import best_dev, is_test_score
from bioray.pipeline.stages.arms import Coordinate, named_arms
from bioray.pipeline.stages.base import Node, Stage, StageEnv
from bioray.tasks import registry
from bioray.tracking.registry import model_name


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
                                        metric=registry.task_for(dataset).metric,
                                        evaluations=evaluations, named_arms=named_arms(config))
            needs = {"evaluations": tuple(evaluations), "runs": tuple(run for n in evaluated for run in n.inputs)}
            nodes.append(Node(f"register-task/{dataset.name}", self, needs, params))
        return nodes

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.pipeline.register_tasks import TaskVersion, run_register_tasks
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

"""Stage evaluate: a fine-tuned model's paper metric on its test set."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from bioray.config import DatasetConfig, EvaluateConfig, WorkflowConfig
from bioray.pipeline.stages.base import Node, Stage, StageEnv
from bioray.pipeline.stages.finetune import dataset_files, dataset_instances, instance_name
from bioray.tasks import registry


class EvaluateParams(BaseModel):
    evaluate: EvaluateConfig
    dataset: DatasetConfig
    fold: int | None = None
    seed: int
    max_length: int  # the dataset's fine-tuning window: the model was trained on windows of this length


class Evaluate(Stage):
    kind = "evaluate"
    help = "Score every fine-tuned model on its test set with the task's paper metric."
    num_cpus = 1
    dataset_context = "test"

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        return [Node(instance_name("evaluate", dataset, fold, seed), self,
                     (instance_name("finetune", dataset, fold, seed),),
                     EvaluateParams(evaluate=config.evaluate, dataset=dataset, fold=fold, seed=seed,
                                    max_length=config.finetune.for_dataset(dataset).max_length),
                     dataset_files(config, dataset), registry.code_modules(dataset))
                for dataset, fold, seed in dataset_instances(config)]

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.tasks.evaluate import run_evaluate
        from bioray.tasks.splits import load_splits

        params: EvaluateParams = node.params
        (tuned,) = inputs.values()
        test = load_splits(params.dataset, env.data_path, params.fold)["test"]
        where = f", fold {params.fold + 1}" if params.fold is not None else ""
        return run_evaluate(registry.task_for(params.dataset), test, model_dir=tuned.model, labels=tuned.labels,
                            max_length=params.max_length, batch_size=params.evaluate.batch_size, output=output,
                            title=f"{params.dataset.name}{where}")

"""Stage evaluate: the paper metric on the test set, scored once, with the fine-tuned model that was
best on the dev set (over the runs of a learning-rate grid)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from bioray.config import DatasetConfig, EvaluateConfig, WorkflowConfig
from bioray.metric_names import best_dev, test_score
from bioray.pipeline.stages.arms import Coordinate, dataset_of, evaluations, fine_tuning_runs, instance_name
from bioray.pipeline.stages.base import Node, Stage, StageEnv
from bioray.pipeline.stages.finetune import dataset_files
from bioray.tasks import catalog


class EvaluateParams(BaseModel):
    evaluate: EvaluateConfig
    dataset: DatasetConfig
    at: Coordinate
    max_length: int  # the dataset's fine-tuning window: the model was trained on windows of this length


class Evaluate(Stage):
    kind = "evaluate"
    Params = EvaluateParams
    help = "Score every fine-tuned model on its test set with the task's paper metric (the dev-best of a grid)."
    num_cpus = 1
    dataset_context = "test"
    large_artifacts = ("predictions.jsonl",)  # every test example's prediction, beside the scores

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        nodes = []
        for at in evaluations(config):
            dataset = dataset_of(config, at)
            params = EvaluateParams(evaluate=config.evaluate, dataset=dataset, at=at,
                                    max_length=config.finetune.for_dataset(dataset).max_length)
            runs = tuple(instance_name("finetune", config, run) for run in fine_tuning_runs(config, at))
            nodes.append(Node(instance_name("evaluate", config, at), self, {"runs": runs},
                              params, dataset_files(config, dataset), catalog.code_modules(dataset)))
        return nodes

    def headline_for(self, node: Node) -> tuple[str, ...]:
        """The entry's metric first, then the rest its task type scores."""
        task = catalog.task_for(node.params.dataset)
        return tuple(dict.fromkeys(test_score(task.name, m) for m in (task.metric, task.primary_metric, *task.metrics)))

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.tasks.evaluate import run_evaluate
        from bioray.tasks.splits import load_splits

        params: EvaluateParams = node.params
        task = catalog.task_for(params.dataset)
        runs = inputs["runs"]
        chosen_name, tuned = choose(runs, task.metric)
        test = load_splits(params.dataset, env.dataset_path, params.at.fold)["test"]
        where = f", fold {params.at.fold + 1}" if params.at.fold is not None else ""
        metrics = run_evaluate(task, test, model_dir=tuned.model, labels=tuned.labels, max_length=params.max_length,
                               batch_size=params.evaluate.batch_size, output=output,
                               title=f"{params.dataset.name}{where}")
        if len(runs) > 1:  # a learning-rate grid: say which run was scored, and why
            grid = {name: result.metrics.get(best_dev(task.metric)) for name, result in runs.items()}
            (output / "choice.json").write_text(json.dumps({"chosen": chosen_name, "dev": grid}, indent=2))
            metrics["evaluate/chosen_lr"] = tuned.metrics.get("finetune/lr", float("nan"))
        return metrics


def choose(inputs: dict, metric: str) -> tuple[str, object]:
    """The fine-tuning run best on the dev set (the first of equals; the only one without a grid)."""
    if len(inputs) == 1:
        return next(iter(inputs.items()))
    scored = [(result.metrics.get(best_dev(metric)), name) for name, result in inputs.items()]
    missing = [name for score, name in scored if score is None]
    if missing:
        raise ValueError(f"a learning-rate grid is chosen on the dev set, but {missing[0]} has no dev score "
                         "(the dataset entry needs a dev file)")
    best = max(scored, key=lambda pair: pair[0])[1]
    return best, inputs[best]

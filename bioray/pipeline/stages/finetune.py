"""Stage finetune: the task's head on an encoder, per arm, dataset, fold, seed (and learning rate of a
grid), data-parallel on a worker group the runner lends it (bioray.train.worker_group); the model of
the epoch best on the dev set is kept."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from bioray.config import DatasetConfig, TrainingConfig, WorkflowConfig
from bioray.metric_names import best_dev
from bioray.pipeline.stages.arms import (
    Coordinate,
    arm_of,
    dataset_of,
    encoder_source,
    evaluations,
    fine_tuning_runs,
    instance_name,
)
from bioray.pipeline.stages.base import Node, Stage, StageEnv, StageOutput
from bioray.tasks import catalog


class FinetuneParams(BaseModel):
    """What one fine-tuning run reads: its training settings, its dataset entry, where it sits (arm,
    fold, seed, lr) and where its encoder is in its input's output."""

    training: TrainingConfig
    dataset: DatasetConfig
    at: Coordinate
    encoder_model: str = "model"


class FinetuneOutput(StageOutput):
    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def labels(self) -> list[str]:
        return json.loads((self.path / "labels.json").read_text())

    @property
    def mlflow_model(self) -> str | None:
        """The model its run logged (`finetune.log_model`) as `models:/<model id>`; None when not logged."""
        logged = self.path / "mlflow_model.json"
        return json.loads(logged.read_text())["model_uri"] if logged.is_file() else None


def dataset_files(config: WorkflowConfig, dataset: DatasetConfig) -> tuple[str, ...]:
    """Every file the entry reads (a folder entry: every file under it), for the key's fingerprints."""
    from bioray.tasks.splits import dataset_files as entry_files

    paths = entry_files(dataset, config.dataset_path)
    return tuple(str(f) for p in paths for f in (sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]))


class Finetune(Stage):
    kind = "finetune"
    help = "Fine-tune each encoder on every dataset, fold and seed (Ray workers); keep the epoch best on dev."
    output = FinetuneOutput
    Params = FinetuneParams
    volatile = ("mlflow_model.json",)  # the id MLflow gave the logged model
    dataset_context = "train"

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        nodes = []
        for evaluation in evaluations(config):
            source, model = encoder_source(config, arm_of(config, evaluation))
            dataset = dataset_of(config, evaluation)
            for run in fine_tuning_runs(config, evaluation):
                params = FinetuneParams(training=config.finetune.for_dataset(dataset, run.lr), dataset=dataset,
                                        at=run, encoder_model=model)
                nodes.append(Node(instance_name("finetune", config, run), self, {"encoder": source}, params,
                                  dataset_files(config, dataset), catalog.code_modules(dataset)))
        return nodes

    def retries(self, node: Node) -> int:
        return node.params.training.max_failures

    def nondeterministic(self, node: Node) -> str | None:
        if node.params.training.use_gpu and not node.params.training.deterministic:
            return "GPU kernels (cuBLAS, atomic adds) without finetune.deterministic"
        return None

    def training_workers(self, node: Node) -> int:
        return node.params.training.num_workers

    def worker_scaling(self, node: Node):
        from bioray.train.finetune import scaling

        return scaling(node.params.training)

    def headline_for(self, node: Node) -> tuple[str, ...]:
        return (best_dev(catalog.task_for(node.params.dataset).metric),)

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.tasks.splits import load_splits
        from bioray.train.finetune import run_finetune

        params: FinetuneParams = node.params
        task = catalog.task_for(params.dataset)
        splits = load_splits(params.dataset, env.dataset_path, params.at.fold)  # bad data fails here, before any worker
        labels = task.label_list(splits["train"], splits.get("dev", []))
        encoder = inputs["encoder"]
        metrics = run_finetune(params.training, task, splits, labels, params.at.seed,
                               encoder_dir=encoder.path / params.encoder_model, output=output, context=env.context,
                               progress_file=env.progress_file, group=env.workers, ready_at=env.ready_at)
        if params.training.log_model:
            from bioray.tasks.serving import log_task_model

            info = log_task_model(output / "model", env.context.run_id, "model")
            (output / "mlflow_model.json").write_text(json.dumps({"model_uri": info.model_uri}))
            env.context.set_tag("bioray.mlflow_model", info.model_uri)
        return metrics

"""Stage finetune: the task's head on the pretrained encoder, per dataset, fold and seed (Ray Train)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from bioray.config import DatasetConfig, TrainingConfig, WorkflowConfig
from bioray.pipeline.stages.base import Node, Stage, StageEnv, StageOutput
from bioray.tasks import registry


class FinetuneParams(BaseModel):
    """What one fine-tuning run reads: its training settings, its dataset entry, seed and fold."""

    training: TrainingConfig
    dataset: DatasetConfig
    seed: int
    fold: int | None = None  # k-fold datasets: 0-based fold


class FinetuneOutput(StageOutput):
    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def labels(self) -> list[str]:
        return json.loads((self.path / "labels.json").read_text())


def instance_name(kind: str, dataset: DatasetConfig, fold: int | None, seed: int) -> str:
    """`<kind>/<dataset>[/fold-<k>]/seed-<n>`: the stage names of fine-tuning and evaluation."""
    fold_part = f"/fold-{fold + 1}" if fold is not None else ""
    return f"{kind}/{dataset.name}{fold_part}/seed-{seed}"


def dataset_instances(config: WorkflowConfig):
    """(dataset, fold, seed) of every fine-tuning run of a workflow, in order."""
    for dataset in config.finetune.datasets:
        for fold in (range(len(dataset.folds)) if dataset.folds else [None]):
            for seed in config.finetune.seeds:
                yield dataset, fold, seed


def dataset_files(config: WorkflowConfig, dataset: DatasetConfig) -> tuple[str, ...]:
    """Every file the entry reads (a folder entry: every file under it), for the key's fingerprints."""
    from bioray.tasks.splits import dataset_files as entry_files

    paths = entry_files(dataset, config.data_path)
    return tuple(str(f) for p in paths for f in (sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]))


class Finetune(Stage):
    kind = "finetune"
    help = "Fine-tune the encoder on every dataset, fold and seed (Ray Train)."
    output = FinetuneOutput
    training_slot = True  # queued in the runner for a free slot, not as an idle trainer
    dataset_context = "train"

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        return [Node(instance_name("finetune", dataset, fold, seed), self, ("pretrain",),
                     FinetuneParams(training=config.finetune.for_dataset(dataset), dataset=dataset, seed=seed,
                                    fold=fold),
                     dataset_files(config, dataset), registry.code_modules(dataset))
                for dataset, fold, seed in dataset_instances(config)]

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.tasks.splits import load_splits
        from bioray.train.finetune import run_finetune

        params: FinetuneParams = node.params
        task = registry.task_for(params.dataset)
        splits = load_splits(params.dataset, env.data_path, params.fold)  # bad data fails here, before any worker
        labels = task.label_list(splits["train"], splits.get("dev", []))
        metrics = run_finetune(params.training, task, splits, labels, params.seed,
                               encoder_dir=inputs["pretrain"].model, output=output, storage=env.train_storage,
                               run_name=f"{node.name.replace('/', '-')}-{env.key}", context=env.context)
        if params.training.log_model:
            from bioray.tracking.models import log_transformers_model

            info = log_transformers_model(output / "model", env.context.run_id, "model")
            (output / "mlflow_model.json").write_text(json.dumps({"model_uri": info.model_uri}))
            env.context.set_tag("bioray.mlflow_model", info.model_uri)
        return metrics

"""The encoders a workflow fine-tunes (its arms) and the names of their stage instances.

With no `encoders` key there is one arm, the workflow's own pretraining, and the instance names are
`finetune/<dataset>[/fold-<k>]/seed-<n>`; with several arms each name carries its arm
(`finetune/<arm>/<dataset>/...`). A learning-rate grid adds `/lr-<value>` to fine-tuning runs; the
evaluation of a (arm, dataset, fold, seed) scores the run of the grid that was best on dev.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict

from bioray.config import DatasetConfig, EncoderConfig, WorkflowConfig


class Coordinate(BaseModel):
    """Where one evaluation sits (arm, dataset, fold, seed), or one fine-tuning run: the same with its
    learning rate. Every stage that plans, scores or registers fine-tuned models reads these fields;
    none parses an instance name."""

    model_config = ConfigDict(frozen=True)
    arm: str
    dataset: str
    fold: int | None = None  # k-fold datasets: 0-based fold
    seed: int
    lr: float | None = None  # fine-tuning runs only

    @property
    def label(self) -> str:
        """`<dataset>[/fold-<k>]/seed-<n>`: the evaluation within its arm (registered versions' score keys)."""
        return "/".join([self.dataset, *([f"fold-{self.fold + 1}"] if self.fold is not None else []),
                         f"seed-{self.seed}"])


def named_arms(config: WorkflowConfig) -> bool:
    return config.encoders is not None


def instance_name(kind: str, config: WorkflowConfig, at: Coordinate) -> str:
    """`<kind>[/<arm>]/<dataset>[/fold-<k>]/seed-<n>[/lr-<value>]` (the lr only in a grid)."""
    parts = [kind, *([at.arm] if named_arms(config) else []), at.label]
    if at.lr is not None and len(config.finetune.learning_rates(dataset_of(config, at), arm_of(config, at))) > 1:
        parts.append(f"lr-{at.lr:g}")
    return "/".join(parts)


def arm_of(config: WorkflowConfig, at: Coordinate) -> EncoderConfig:
    return next(arm for arm in config.arms if arm.name == at.arm)


def dataset_of(config: WorkflowConfig, at: Coordinate) -> DatasetConfig:
    return next(dataset for dataset in config.finetune.datasets if dataset.name == at.dataset)


def evaluations(config: WorkflowConfig) -> Iterator[Coordinate]:
    for arm in config.arms:
        for dataset in config.finetune.datasets:
            for fold in (range(len(dataset.folds)) if dataset.folds else [None]):
                for seed in config.finetune.seeds:
                    yield Coordinate(arm=arm.name, dataset=dataset.name, fold=fold, seed=seed)


def fine_tuning_runs(config: WorkflowConfig, evaluation: Coordinate) -> list[Coordinate]:
    """The runs an evaluation chooses from: one per learning rate of the dataset's grid."""
    rates = config.finetune.learning_rates(dataset_of(config, evaluation), arm_of(config, evaluation))
    return [Coordinate(**{**evaluation.model_dump(), "lr": lr}) for lr in rates]


def encoder_source(config: WorkflowConfig, arm: EncoderConfig) -> tuple[str, str]:
    """(the stage instance whose output holds the arm's encoder, the model folder inside it)."""
    if arm.source == "pretrain" and not arm.own_corpus:
        if arm.at_fraction is None or arm.at_fraction == 1:
            return "pretrain", "model"
        return "pretrain", f"model-step-{fraction_step(config, arm.at_fraction)}"
    if arm.continue_pretraining or arm.own_corpus:
        return f"pretrain/{arm.name}", "model"
    return f"encoder/{arm.name}", "model"


def fraction_step(config: WorkflowConfig, fraction: float) -> int:
    return max(1, round(config.pretrain.steps * fraction))


def continued_arms(config: WorkflowConfig) -> list[EncoderConfig]:
    return [arm for arm in config.arms if arm.continue_pretraining]


def own_corpus_arms(config: WorkflowConfig) -> list[EncoderConfig]:
    """Arms pretrained on a corpus of their own (`corpus`): their stages are `<kind>/<arm>`."""
    return [arm for arm in config.arms if arm.own_corpus]


def uses_own_pretraining(config: WorkflowConfig) -> bool:
    """Whether the workflow's pretraining (`pretrain`, on its own corpus) is an arm or a point of one."""
    return any(arm.source == "pretrain" and not arm.own_corpus for arm in config.arms)


def corpora(config: WorkflowConfig, nodes) -> dict[str, str]:
    """{corpus label: its ingest instance}: `corpus` for the workflow's, the arm's name for an arm's own."""
    names = {n.name for n in nodes}
    found = {"corpus": "ingest"} if "ingest" in names else {}
    return found | {arm.name: f"ingest/{arm.name}" for arm in own_corpus_arms(config)}


def registered_arm(config: WorkflowConfig) -> EncoderConfig:
    """The arm the register stage registers and gates."""
    if config.registry.encoder is not None:
        return next(a for a in config.arms if a.name == config.registry.encoder)
    return next((a for a in config.arms if a.source == "pretrain" and a.at_fraction in (None, 1)), config.arms[0])

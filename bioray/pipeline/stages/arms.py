"""The encoders a workflow fine-tunes (its arms) and the names of their stage instances.

With no `encoders` key there is one arm, the workflow's own pretraining, and the instance names are
`finetune/<dataset>[/fold-<k>]/seed-<n>`; with several arms each name carries its arm
(`finetune/<arm>/<dataset>/...`). A learning-rate grid adds `/lr-<value>` to fine-tuning runs; the
evaluation of a (arm, dataset, fold, seed) scores the run of the grid that was best on dev.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from bioray.config import DatasetConfig, EncoderConfig, WorkflowConfig


@dataclass(frozen=True)
class Run:
    """One fine-tuning run (or, with lr None, the evaluation of one (arm, dataset, fold, seed))."""

    arm: EncoderConfig
    dataset: DatasetConfig
    fold: int | None
    seed: int
    lr: float | None = None


def named_arms(config: WorkflowConfig) -> bool:
    return config.encoders is not None


def instance_name(kind: str, config: WorkflowConfig, run: Run) -> str:
    """`<kind>[/<arm>]/<dataset>[/fold-<k>]/seed-<n>[/lr-<value>]`."""
    parts = [kind] + ([run.arm.name] if named_arms(config) else []) + [run.dataset.name]
    parts += ([f"fold-{run.fold + 1}"] if run.fold is not None else []) + [f"seed-{run.seed}"]
    if run.lr is not None and len(config.finetune.learning_rates(run.dataset, run.arm)) > 1:
        parts.append(f"lr-{run.lr:g}")
    return "/".join(parts)


def evaluations(config: WorkflowConfig) -> Iterator[Run]:
    for arm in config.arms:
        for dataset in config.finetune.datasets:
            for fold in (range(len(dataset.folds)) if dataset.folds else [None]):
                for seed in config.finetune.seeds:
                    yield Run(arm, dataset, fold, seed)


def fine_tuning_runs(config: WorkflowConfig, evaluation: Run) -> list[Run]:
    """The runs an evaluation chooses from: one per learning rate of the dataset's grid."""
    return [Run(evaluation.arm, evaluation.dataset, evaluation.fold, evaluation.seed, lr)
            for lr in config.finetune.learning_rates(evaluation.dataset, evaluation.arm)]


def encoder_source(config: WorkflowConfig, arm: EncoderConfig) -> tuple[str, str]:
    """(the stage instance whose output holds the arm's encoder, the model folder inside it)."""
    if arm.source == "pretrain":
        if arm.at_fraction is None or arm.at_fraction == 1:
            return "pretrain", "model"
        return "pretrain", f"model-step-{fraction_step(config, arm.at_fraction)}"
    if arm.continue_pretraining:
        return f"pretrain/{arm.name}", "model"
    return f"encoder/{arm.name}", "model"


def fraction_step(config: WorkflowConfig, fraction: float) -> int:
    return max(1, round(config.pretrain.steps * fraction))


def continued_arms(config: WorkflowConfig) -> list[EncoderConfig]:
    return [arm for arm in config.arms if arm.continue_pretraining]


def uses_own_pretraining(config: WorkflowConfig) -> bool:
    return any(arm.source == "pretrain" for arm in config.arms)


def registered_arm(config: WorkflowConfig) -> EncoderConfig:
    """The arm the register stage registers and gates."""
    if config.registry.encoder is not None:
        return next(a for a in config.arms if a.name == config.registry.encoder)
    return next((a for a in config.arms if a.source == "pretrain" and a.at_fraction in (None, 1)), config.arms[0])

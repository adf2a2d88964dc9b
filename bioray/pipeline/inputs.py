"""A workflow's inputs checked before anything runs: every raw file and dataset file named exists,
every dataset entry's task type and format are known and fit, every local initial checkpoint is one,
and (for `validate` and the commands that run stages) every dataset split reads as its stages will
read it. All problems are listed at once, each naming its key and the file and line."""

from __future__ import annotations

from pathlib import Path

from bioray.config import ConfigError, WorkflowConfig, entry_key, is_mlflow_uri, load_workflow
from bioray.corpus.files import list_source_files
from bioray.tasks import catalog
from bioray.tasks.published import benchmark_problems
from bioray.tasks.splits import dataset_problems


def check_inputs(config: WorkflowConfig, read_datasets: bool = False) -> None:
    problems = []
    fetched = [config.data_path(f.destination) for f in (config.repretrain.fetch if config.repretrain else [])]
    for i, source in enumerate(config.ingest.sources if config.ingest else []):
        path = config.data_path(source.path)
        if any(path == d or d in path.parents for d in fetched):
            continue  # filled by the scheduled run's fetch, which comes first
        if not list_source_files(path, source.format):
            problems.append(f"{entry_key('ingest.sources', i, source.name)}.path: no {source.format} files at {path}")
    for i, dataset in enumerate(config.finetune.datasets):
        where = entry_key("finetune.datasets", i, dataset.name)
        entry = catalog.entry_problems(dataset, where)
        entry = entry or [f"{where}.{p}" for p in benchmark_problems(dataset, catalog.task_for(dataset).metric)]
        problems += entry
        if not entry:
            missing = _missing_files(config, dataset, where)
            problems += missing
            if read_datasets and not missing:
                problems += [f"{where}: {p}" for p in dataset_problems(dataset, config.dataset_path)]
    checkpoints = [("vocab.init_checkpoint", config.vocab.init_checkpoint),
                   ("pretrain.init_checkpoint", config.pretrain.init_checkpoint)]
    checkpoints += [(f"{entry_key('encoders', i, arm.name)}.checkpoint", arm.checkpoint)
                    for i, arm in enumerate(config.encoders or [])]
    for key, path in checkpoints:
        if path and not is_mlflow_uri(path) and not (config.data_path(path) / "config.json").is_file():
            problems.append(f"{key}: no HF checkpoint (config.json) at {config.data_path(path)}")
    if problems:
        raise ConfigError("workflow inputs:\n  " + "\n  ".join(problems))


def _missing_files(config: WorkflowConfig, dataset, where: str) -> list[str]:
    missing, options = [], catalog.format_for(dataset).options
    paths = {key: getattr(dataset, key) for key in ("train", "dev", "test", "path")}
    for key, relative in {**paths, **{key: getattr(options, key) for key in options.file_keys}}.items():
        if relative is not None and not config.dataset_path(relative).exists():
            missing.append(f"{where}.{key}: file not found: {config.dataset_path(relative)}")
    for k, fold in enumerate(dataset.folds or []):
        for split in ("train", "test"):
            if not (config.dataset_path(fold) / f"{split}.tsv").is_file():
                missing.append(f"{where}.folds[{k}]: no {split}.tsv in {config.dataset_path(fold)}")
    return missing


def load_checked(path: str | Path, overrides: list[str] | None = None, read_datasets: bool = False) -> WorkflowConfig:
    """A workflow loaded (schema) and its inputs checked: what every command does first (`validate` and
    the commands that run stages also read every dataset: broken data stops them before any stage)."""
    config = load_workflow(path, overrides)
    check_inputs(config, read_datasets)
    return config

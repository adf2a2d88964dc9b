"""Hugging Face model directories logged as MLflow models (transformers flavor), so that
`mlflow.transformers.load_model(uri)` gives a working pipeline: fill-mask for an encoder,
token classification, text classification or question answering for a fine-tuned model."""

from __future__ import annotations

import shutil
from importlib.metadata import version
from pathlib import Path

import mlflow
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

# architecture suffix -> (pipeline task, the Auto class that loads it)
PIPELINES = {
    "ForMaskedLM": ("fill-mask", AutoModelForMaskedLM),
    "ForPreTraining": ("fill-mask", AutoModelForMaskedLM),  # an encoder exported with its NSP head
    "ForTokenClassification": ("token-classification", AutoModelForTokenClassification),
    "ForSequenceClassification": ("text-classification", AutoModelForSequenceClassification),
    "ForQuestionAnswering": ("question-answering", AutoModelForQuestionAnswering),
}


def _requirements() -> list[str]:
    """Stated explicitly: MLflow's inference would import torchvision, which a text model does not need."""
    return [f"{name}=={version(name)}" for name in ("torch", "transformers", "tokenizers", "safetensors")]


def pipeline_for(model_dir: Path) -> tuple[str, type]:
    architecture = (AutoConfig.from_pretrained(str(model_dir)).architectures or [""])[0]
    for suffix, found in PIPELINES.items():
        if architecture.endswith(suffix):
            return found
    raise ValueError(f"{model_dir}: architecture {architecture!r} has no transformers pipeline in bioray "
                     f"(expected one ending in {', '.join(PIPELINES)})")


def log_transformers_model(model_dir: Path, run_id: str, name: str, registered_model_name: str | None = None):
    """Log the model directory on the run as an MLflow transformers model; returns MLflow's ModelInfo.
    The HF files are under the logged model's `model/` folder. Uses MLflow's fluent API: the process
    must be pointed at the store (bioray.tracking.store.activate)."""
    task, auto_class = pipeline_for(model_dir)
    components = {"model": auto_class.from_pretrained(str(model_dir), use_safetensors=True),
                  "tokenizer": AutoTokenizer.from_pretrained(str(model_dir))}
    with mlflow.start_run(run_id=run_id):
        return mlflow.transformers.log_model(transformers_model=components, name=name, task=task,
                                             registered_model_name=registered_model_name,
                                             pip_requirements=_requirements())


def hf_directory(path: Path, complete: bool = False) -> Path:
    """The directory holding a Hugging Face model (config.json + tokenizer) under path.

    An MLflow transformers model keeps the weights in `model/` and the tokenizer in
    `components/tokenizer/`; with complete=True (a copy bioray downloaded itself) the tokenizer files
    are copied next to the weights, so the directory loads with `from_pretrained` alone.
    """
    for directory in sorted(p.parent for p in Path(path).rglob("config.json")):
        if (directory / "tokenizer_config.json").is_file():
            return directory
        tokenizer = directory.parent / "components" / "tokenizer"
        if (tokenizer / "tokenizer_config.json").is_file():
            if not complete:
                raise FileNotFoundError(f"{path}: an MLflow transformers model; load it with "
                                        f"mlflow.transformers.load_model, or give its models:/ or runs:/ URI")
            for item in tokenizer.iterdir():
                shutil.copy2(item, directory / item.name)
            return directory
    raise FileNotFoundError(f"{path}: no Hugging Face model (config.json + tokenizer) in it")


def resolve_model(uri: str) -> Path:
    """A local model directory, or an MLflow URI (models:/name@alias, runs:/id/path) downloaded; the
    directory holding the HF config.json is returned."""
    path = Path(uri)
    downloaded = not path.exists()
    if downloaded:
        path = Path(mlflow.artifacts.download_artifacts(uri))
    if (path / "config.json").is_file():
        return path
    return hf_directory(path, complete=downloaded)

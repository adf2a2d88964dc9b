"""Hugging Face model directories logged as MLflow models (transformers flavor), so that
`mlflow.transformers.load_model(uri)` gives a working pipeline: fill-mask for an encoder,
token classification, text classification or question answering for a fine-tuned model.

A fine-tuned model may name its own python_function loader (what `mlflow models serve` and
`mlflow.pyfunc.load_model` use) instead of MLflow's generic one: bioray.tasks.serving does, so a
served model answers as `bioray predict` does. This module only writes the name; it imports no loader.
"""

from __future__ import annotations

import os
import shutil
from importlib.metadata import version
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from bioray.constants import MLFLOW_URI_PREFIXES
from bioray.tracking.store import activate

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


class _TransformersWithLoader:
    """MLflow's transformers flavor as Model.log sees a flavor (a `save_model` and a name), with the
    python_function flavor's loader module replaced once MLflow has written the model."""

    __name__ = "mlflow.transformers"  # the flavor the logged model records

    def __init__(self, loader_module: str):
        self.loader_module = loader_module

    def save_model(self, path: str, mlflow_model: Model, **kwargs) -> None:
        mlflow.transformers.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
        mlflow_model.flavors["python_function"]["loader_module"] = self.loader_module
        mlflow_model.save(str(Path(path) / "MLmodel"))


def log_transformers_model(model_dir: Path, run_id: str, name: str, registered_model_name: str | None = None,
                           pyfunc_loader: str | None = None):
    """Log the model directory on the run as an MLflow transformers model; returns MLflow's ModelInfo.
    The HF files are under the logged model's `model/` folder. `pyfunc_loader`: a module with
    `_load_pyfunc(path)` that serves the model (texts in) instead of MLflow's transformers wrapper.
    Uses MLflow's fluent API: the process must be pointed at the store (bioray.tracking.store.activate)."""
    task, auto_class = pipeline_for(model_dir)
    components = {"model": auto_class.from_pretrained(str(model_dir), use_safetensors=True),
                  "tokenizer": AutoTokenizer.from_pretrained(str(model_dir))}
    arguments = {"transformers_model": components, "name": name, "task": task,
                 "registered_model_name": registered_model_name, "pip_requirements": _requirements()}
    with mlflow.start_run(run_id=run_id):
        if pyfunc_loader is None:
            return mlflow.transformers.log_model(**arguments)
        # texts in; what comes out is the loader's (MLflow's default signature would say one string per text)
        texts = ModelSignature(inputs=Schema([ColSpec(DataType.string)]))
        return Model.log(artifact_path=None, flavor=_TransformersWithLoader(pyfunc_loader), signature=texts,
                         **arguments)


def hf_parts(path: Path) -> tuple[Path, Path]:
    """(weights directory, tokenizer directory) of a Hugging Face model under path: one directory, or
    an MLflow transformers model's `model/` and `components/tokenizer/`. Writes nothing."""
    for directory in sorted(p.parent for p in Path(path).rglob("config.json")):
        if (directory / "tokenizer_config.json").is_file():
            return directory, directory
        tokenizer = directory.parent / "components" / "tokenizer"
        if (tokenizer / "tokenizer_config.json").is_file():
            return directory, tokenizer
    raise FileNotFoundError(f"{path}: no Hugging Face model (config.json + tokenizer) in it")


def hf_directory(path: Path, complete: bool = False) -> Path:
    """The directory holding a Hugging Face model (config.json + tokenizer) under path.

    An MLflow transformers model keeps the weights in `model/` and the tokenizer in
    `components/tokenizer/`; with complete=True (a copy bioray downloaded itself) the tokenizer files
    are copied next to the weights, so the directory loads with `from_pretrained` alone.
    """
    directory, tokenizer = hf_parts(path)
    if tokenizer != directory:
        if not complete:
            raise FileNotFoundError(f"{path}: an MLflow transformers model; load it with "
                                    f"mlflow.transformers.load_model, or give its models:/ or runs:/ URI")
        for item in tokenizer.iterdir():
            shutil.copy2(item, directory / item.name)
    return directory


def resolve_model(uri: str, tracking_uri: str | None = None) -> Path:
    """A local model directory, or an MLflow URI (models:/name@alias, runs:/id/path) downloaded from
    `tracking_uri` (default: MLFLOW_TRACKING_URI; never a store MLflow would make in the working
    directory); the directory holding the HF config.json is returned. What cannot be used raises
    FileNotFoundError or ValueError with one line saying why."""
    path = Path(uri)
    if path.exists():
        return path if (path / "config.json").is_file() else hf_directory(path)
    if not uri.startswith(MLFLOW_URI_PREFIXES):
        raise FileNotFoundError(f"{uri}: no such model directory, and not an MLflow URI "
                                "(models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/<path>)")
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise ValueError(f"{uri}: an MLflow URI needs the tracking store that holds it: give --workflow (its "
                         "store) or set MLFLOW_TRACKING_URI")
    activate(tracking_uri)
    try:
        path = Path(mlflow.artifacts.download_artifacts(uri))
    except MlflowException as exc:
        raise ValueError(f"{uri}: {str(exc.message).splitlines()[0]} (tracking store {tracking_uri})") from None
    if (path / "config.json").is_file():
        return path
    return hf_directory(path, complete=True)

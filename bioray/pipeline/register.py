"""Register stage: the evaluated encoder goes into the MLflow model registry, in Hugging Face format."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from transformers import AutoModelForMaskedLM, AutoTokenizer

from bioray.config import RegisterConfig
from bioray.pipeline.gate import run_gate


def _requirements() -> list[str]:
    """Stated explicitly: MLflow's inference would import torchvision, which a text encoder does not need."""
    return [f"{name}=={version(name)}" for name in ("torch", "transformers", "tokenizers", "safetensors")]


def run_register(config: RegisterConfig, *, encoder_dir: Path, scores: dict[str, float],
                 report_scores: dict[str, float], run_id: str, tracking_uri: str, output: Path) -> dict:
    """Log the encoder as an MLflow transformers model, register it, point the alias at it, and put it
    through the champion/challenger gate (the report's scores are the version's tags the gate reads).

    The HF files (config.json, model.safetensors, tokenizer) are under the model's `model/` folder:
    `AutoModel.from_pretrained(download_artifacts("models:/bioray-encoder@challenger") + "/model")`.
    """
    mlflow.set_tracking_uri(tracking_uri)
    model = AutoModelForMaskedLM.from_pretrained(str(encoder_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    with mlflow.start_run(run_id=run_id):
        info = mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer}, name="encoder", task="fill-mask",
            registered_model_name=config.model_name, pip_requirements=_requirements())
    client = MlflowClient(tracking_uri)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(config.model_name, config.alias, version)
    for metric, value in {**scores, **report_scores}.items():
        client.set_model_version_tag(config.model_name, version, metric, f"{value:.6f}")
    client.set_model_version_tag(config.model_name, version, "hf_subdir", "model")
    registration = {"model_name": config.model_name, "version": version, "alias": config.alias,
                    "model_uri": f"models:/{config.model_name}/{version}", "logged_model_uri": info.model_uri}
    (output / "registration.json").write_text(json.dumps(registration, indent=2))
    metrics = {"register/version": int(version)}
    if config.gate.enabled:
        decision = run_gate(client, config.model_name, version, config.gate, output)
        metrics["gate/promoted"] = int(decision["promote"])
        metrics.update({f"gate/{side}_score": decision[f"{side}_score"] for side in ("challenger", "champion")
                        if decision[f"{side}_score"] is not None})
    return metrics

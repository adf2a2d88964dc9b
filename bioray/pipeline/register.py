"""Register stage: the evaluated encoder goes into the MLflow model registry, in Hugging Face format."""

from __future__ import annotations

import json
from pathlib import Path

from bioray.config import RegisterConfig
from bioray.pipeline.gate import run_gate
from bioray.tracking.context import RunContext
from bioray.tracking.models import log_transformers_model


def run_register(config: RegisterConfig, *, encoder_dir: Path, scores: dict[str, float],
                 report_scores: dict[str, float], context: RunContext, output: Path) -> dict:
    """Log the encoder as an MLflow transformers model, register it, point the alias at it, and put it
    through the champion/challenger gate (the report's scores are the version's tags the gate reads).

    The HF files (config.json, model.safetensors, tokenizer) are under the model's `model/` folder:
    `AutoModel.from_pretrained(download_artifacts("models:/bioray-encoder@challenger") + "/model")`.
    """
    info = log_transformers_model(encoder_dir, context.run_id, "encoder", registered_model_name=config.model_name)
    client = context.client
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

"""Register stage: the evaluated encoder goes into the MLflow model registry, in Hugging Face format
(bioray.tracking.registry registers it, as it does the fine-tuned task models: register_tasks.py)."""

from __future__ import annotations

import json
from pathlib import Path

from bioray.config import RegisterConfig
from bioray.pipeline.gate import run_gate
from bioray.tracking.context import RunContext
from bioray.tracking.models import log_transformers_model
from bioray.tracking.registry import register_version


def run_register(config: RegisterConfig, *, encoder_dir: Path, scores: dict[str, float],
                 report_scores: dict[str, float], context: RunContext, output: Path) -> dict:
    """Log the encoder as an MLflow transformers model, register it, point the alias at it, and put it
    through the champion/challenger gate (the report's scores are the version's tags the gate reads).

    The HF files (config.json, model.safetensors, tokenizer) are under the model's `model/` folder:
    `AutoModel.from_pretrained(download_artifacts("models:/bioray-encoder@challenger") + "/model")`.
    """
    info = log_transformers_model(encoder_dir, context.run_id, "encoder")
    client = context.client
    registration = register_version(client, info.model_uri, config.model_name, config.alias,
                                    {**scores, **report_scores}, {"hf_subdir": "model"})
    version = registration["version"]
    (output / "registration.json").write_text(json.dumps(registration, indent=2))
    metrics = {"register/version": int(version)}
    if config.gate.enabled:
        decision = run_gate(client, config.model_name, version, config.gate, output)
        metrics["gate/promoted"] = int(decision["promote"])
        metrics.update({f"gate/{side}_score": decision[f"{side}_score"] for side in ("challenger", "champion")
                        if decision[f"{side}_score"] is not None})
    return metrics

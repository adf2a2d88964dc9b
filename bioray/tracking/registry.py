"""Versions in the MLflow model registry: a logged model registered under a name, optionally an alias
pointed at it, its scores and facts as version tags. The encoder (the register stage) and the
fine-tuned task models (the register-task stage) are registered through here, the same way."""

from __future__ import annotations

import re

# what MLflow accepts in a registered model name and a models:/<name>@<alias> URI reads back unchanged
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def model_name(*parts: str) -> str:
    """Parts joined by '-', each made safe for the registry and for `models:/` URIs ('/', ':', '@',
    spaces and the like become '-')."""
    cleaned = [_UNSAFE.sub("-", part).strip("-.") for part in parts]
    if not all(cleaned):
        raise ValueError(f"no registered model name can be made of {list(parts)}")
    return "-".join(cleaned)


def register_version(client, model_uri: str, name: str, alias: str | None, scores: dict[str, float],
                     tags: dict[str, str] | None = None) -> dict:
    """A new version of `name` from a logged model (`models:/<model id>`), the alias moved to it when
    given, each score a version tag (six decimals: what the promotion gate reads back) beside `tags`.
    Uses MLflow's fluent registry API: the process must be pointed at the store. Returns the record
    written to the stage's registration.json."""
    import mlflow  # here, not at the top: planning a workflow names models without importing mlflow

    version = str(mlflow.register_model(model_uri, name).version)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    for key, value in scores.items():
        client.set_model_version_tag(name, version, key, f"{value:.6f}")
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, str(value))
    return {"model_name": name, "version": version, "alias": alias, "model_uri": f"models:/{name}/{version}",
            "logged_model_uri": model_uri}


def logged_model_exists(client, model_uri: str) -> bool:
    """Whether this store holds the logged model `models:/<model id>` (a cached stage's model may have
    been logged to another tracking server)."""
    from mlflow.exceptions import MlflowException

    model_id = model_uri.removeprefix("models:/")
    if model_id == model_uri or "/" in model_id or "@" in model_id:
        return False
    try:
        client.get_logged_model(model_id)
    except MlflowException:
        return False
    return True

"""Where bioray tracks: the tracking URI of a workflow, its experiment, and the one place that points
this process's MLflow (fluent API and child processes) at a store."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient


def tracking_uri_for(configured: str | None, local_db: Path) -> str:
    """Config, then MLFLOW_TRACKING_URI, then a SQLite store in the workdir (`local_db`; no server needed)."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{local_db}"


def ensure_experiment(client: MlflowClient, name: str, local_artifacts: Path) -> str:
    """The experiment's id; a new experiment on a local store keeps its artifacts in `local_artifacts`."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    local_store = client.tracking_uri.startswith(("sqlite:", "file:", "/"))
    location = local_artifacts.as_uri() if local_store else None
    return client.create_experiment(name, artifact_location=location)


@functools.cache
def client_for(tracking_uri: str) -> MlflowClient:
    """One client per tracking URI and process."""
    return MlflowClient(tracking_uri)


def activate(tracking_uri: str) -> MlflowClient:
    """Point this process at the store: MLflow's fluent API, and the processes it starts (Ray tasks on
    this node inherit the environment). The only place bioray sets MLflow's process state."""
    mlflow.set_tracking_uri(tracking_uri)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    return client_for(tracking_uri)

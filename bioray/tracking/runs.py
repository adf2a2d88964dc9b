"""What a run records: params and metrics in batches, the code and job it ran as, and its inputs as
MLflow datasets."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

MAX_PARAM_LENGTH = 6000


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}: MLflow params are flat strings."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def git_commit() -> str | None:
    """The commit of the code this driver runs: `git rev-parse HEAD` in a checkout; under `ray job
    submit` (whose working-dir upload leaves out .git) the `git_commit` of the job's metadata
    (`--metadata-json '{"git_commit": "..."}'`), else BIORAY_GIT_COMMIT; None when none is known."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
        if out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return _job_metadata().get("git_commit") or os.environ.get("BIORAY_GIT_COMMIT") or None


def package_digest() -> str:
    """A hash of all of bioray's source files: which code ran, with or without git (a stage's key hashes
    its own import closure instead: bioray.pipeline.closure.code_digest)."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")) + sorted(package.rglob("*.yaml")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def common_tags() -> dict[str, str]:
    """Tags that link a run to its code and, when submitted with `ray job submit`, its Ray job."""
    tags = {"bioray.code_digest": package_digest()}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    job_id = ray_job_submission_id()
    if job_id:
        tags["ray.job_id"] = job_id
    return tags


def _job_metadata() -> dict:
    """The metadata of the Ray job this driver runs as (empty outside a job): the job supervisor
    hands the driver its job config through the RAY_JOB_CONFIG_JSON_ENV_VAR environment variable."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        metadata = json.loads(raw).get("metadata", {})
    except (ValueError, AttributeError):
        return {}
    return metadata if isinstance(metadata, dict) else {}


def ray_job_submission_id() -> str | None:
    """The id `ray job submit` printed, when this driver runs as a Ray job."""
    return _job_metadata().get("job_submission_id")


def log_params_and_tags(client: MlflowClient, run_id: str, params: dict[str, str], tags: dict[str, str]) -> None:
    items = list(params.items())
    for i in range(0, max(len(items), 1), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run_id, params=[Param(k, v) for k, v in items[i:i + 100]],
                         tags=[RunTag(k, v) for k, v in tags.items()] if i == 0 else [])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    now = int(time.time() * 1000)
    numeric = [Metric(k, float(v), now, step) for k, v in metrics.items() if isinstance(v, (int, float))]
    for i in range(0, len(numeric), 1000):
        client.log_batch(run_id, metrics=numeric[i:i + 1000])


def log_lineage(client: MlflowClient, run_id: str, inputs: list[dict]) -> None:
    """Record what a stage read as MLflow dataset inputs: {name, path, digest, context} each."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    def source(path):
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": all of them local files
            warnings.simplefilter("ignore")
            return resolve_dataset_source(str(path))

    datasets = [DatasetInput(MetaDataset(source(item["path"]), name=item["name"], digest=item["digest"])
                             ._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", item["context"])])
                for item in inputs]
    if datasets:
        client.log_inputs(run_id, datasets=datasets)



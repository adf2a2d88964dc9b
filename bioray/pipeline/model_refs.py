"""Registered models as starting points: every key that takes a checkpoint (`vocab.init_checkpoint`,
`pretrain.init_checkpoint`, `encoders[].checkpoint`) may be an MLflow URI (`models:/bioray-encoder@champion`,
`models:/bioray-encoder/3`, `runs:/<id>/encoder`), resolved here and nowhere else.

An alias is pinned to the version it points at when the run starts, and that version's files are
downloaded once into `<workdir>/models/`; the local path (which names the version) is what the stage
keys hash, so a new champion means new pretraining, and the same champion means a cached one.
"""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

from bioray.config import ConfigError, WorkflowConfig, is_mlflow_uri
from bioray.workdir import Workdir

log = logging.getLogger(__name__)

ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")


def checkpoint_keys(config: WorkflowConfig) -> dict[str, tuple[object, str]]:
    """Every key of the workflow that takes a checkpoint: {"encoders[1].checkpoint": (its section, field)}."""
    keys = {f"{section}.init_checkpoint": (getattr(config, section), "init_checkpoint")
            for section in ("vocab", "pretrain")}
    keys.update({f"encoders[{i}].checkpoint": (arm, "checkpoint") for i, arm in enumerate(config.encoders or [])})
    return keys


def pin(uri: str, client) -> str:
    """models:/name@alias -> models:/name/<version it points at now>; other URIs are already fixed."""
    match = ALIAS_URI.match(uri)
    if not match:
        return uri
    try:
        version = client.get_model_version_by_alias(match["name"], match["alias"]).version
    except Exception as exc:  # MlflowException: no such model or alias
        raise ConfigError(f"{uri}: the registry has no {match['alias']!r} version of {match['name']!r} "
                          f"({type(exc).__name__}); register an encoder first, or use an HF checkpoint "
                          f"directory") from None
    return f"models:/{match['name']}/{version}"


def download(pinned: str, workdir: Workdir) -> Path:
    """The model's files under `<workdir>/models/` (downloaded once, committed by rename); its HF directory."""
    import mlflow

    from bioray.tracking.models import hf_directory

    scheme, rest = pinned.split(":/", 1)  # models:/name/3 -> <workdir>/models/models/name/3
    parts = [re.sub(r"[^A-Za-z0-9._-]+", "_", part).lstrip(".") or "_" for part in rest.split("/") if part]
    local = workdir.model_download(scheme, *parts)
    if not local.is_dir():
        partial = workdir.model_download(scheme, *parts[:-1], f".{parts[-1]}-{uuid.uuid4().hex[:8]}")
        partial.mkdir(parents=True)
        try:
            mlflow.artifacts.download_artifacts(pinned, dst_path=str(partial))
            partial.rename(local)
        except OSError:
            if not local.is_dir():  # a concurrent download committed first: use it
                raise
        finally:
            if partial.exists():
                workdir.remove(partial)
    return hf_directory(local, complete=True)


def resolve_model_refs(config: WorkflowConfig) -> dict[str, str]:
    """Replace the MLflow URIs among the checkpoint keys by local HF directories; returns {key: pinned URI}."""
    from bioray.tracking.store import activate, tracking_uri_for

    refs = {key: (owner, field, getattr(owner, field)) for key, (owner, field) in checkpoint_keys(config).items()}
    refs = {key: ref for key, ref in refs.items() if ref[2] and is_mlflow_uri(ref[2])}
    if not refs:
        return {}
    client = activate(tracking_uri_for(config.tracking.uri, config.paths.mlflow_db))
    pinned, by_uri = {}, {}
    for key, (owner, field, uri) in refs.items():
        if uri not in by_uri:  # vocab and weights from one version even if the alias moves meanwhile
            by_uri[uri] = pin(uri, client)
        pinned[key] = by_uri[uri]
        path = download(pinned[key], config.paths)
        setattr(owner, field, str(path))
        log.info("%s: %s is %s, files in %s", key, uri, pinned[key], path)
    return pinned

"""Register-task stage: a dataset's fine-tuned task models go into the MLflow model registry, one
version each (bioray.tracking.registry registers them, as it does the encoder: register.py)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from bioray.tasks.serving import log_task_model
from bioray.tracking.context import RunContext
from bioray.tracking.registry import logged_model_exists, model_name, register_version

log = logging.getLogger(__name__)


@dataclass
class TaskVersion:
    """A fine-tuned model to register: its files, the model its run logged (if any), its scores."""

    model_dir: Path
    logged_model: str | None  # models:/<model id>, logged by its fine-tuning run
    dev: float | None  # its best dev score (primary metric), which picks the alias
    scores: dict[str, float]  # the test scores of its evaluation, as version tags
    tags: dict[str, object] = field(default_factory=dict)  # dataset, arm, seed, stages: lineage tags


def run_register_tasks(name: str, alias: str, candidates: list[TaskVersion], *, context: RunContext,
                       output: Path) -> dict:
    """One new version of `name` per candidate, in order, the alias on the one best on dev (the first of
    equals, or the first when none has a dev score). A candidate's model is the one its fine-tuning
    run logged when this store holds it (no second copy, and the version links to the run that trained
    it); otherwise it is logged here, on this stage's run. Writes registration.json."""
    client = context.client
    best = max(range(len(candidates)), key=lambda i: (candidates[i].dev is not None, candidates[i].dev or 0.0))
    versions = []
    for index, candidate in enumerate(candidates):
        uri = candidate.logged_model
        if not uri or not logged_model_exists(client, uri):
            if uri:
                log.warning("%s: %s is not in this tracking store; logging the model again", name, uri)
            uri = log_task_model(candidate.model_dir, context.run_id, model_name(str(candidate.tags["evaluation"]))
                                 ).model_uri
        record = register_version(client, uri, name, alias if index == best else None, candidate.scores,
                                  {key: str(value) for key, value in candidate.tags.items()})
        versions.append({**record, "dev": candidate.dev, "scores": candidate.scores, **candidate.tags})
    chosen = versions[best]["version"]
    (output / "registration.json").write_text(json.dumps({"model_name": name, "alias": alias, "alias_version": chosen,
                                                          "model_uri": f"models:/{name}@{alias}",
                                                          "versions": versions}, indent=2, default=str))
    return {"register_task/versions": len(versions), "register_task/alias_version": int(chosen)}

"""The tracking context of a pipeline run, created by the runner and handed to every stage (and by a
stage to its training workers): where to track, the parent run, and the stage's own run."""

from __future__ import annotations

from dataclasses import dataclass, replace

from mlflow.tracking import MlflowClient

from bioray.tracking.store import client_for


@dataclass(frozen=True)
class RunContext:
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    run_id: str = ""  # the stage's run; empty on the driver

    def for_stage(self, run_id: str) -> RunContext:
        return replace(self, run_id=run_id)

    @property
    def client(self) -> MlflowClient:
        return client_for(self.tracking_uri)

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

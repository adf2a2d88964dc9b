"""What the runner tells its listeners as a pipeline run goes: one frozen event per stage transition, in
the order they happen. Listeners (the MLflow runs: stage_runs, the state files: stage_state, the
terminal lines: terminal) are callables taking an event; each ignores the events it has no use for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bioray.pipeline.execute import StageResult
from bioray.pipeline.stages.base import Node


@dataclass(frozen=True)
class StageCached:  # selected, and its output is committed already: not run
    node: Node
    key: str
    result: StageResult


@dataclass(frozen=True)
class StageQueued:  # selected to run (no committed output, or forced), before any stage starts
    node: Node
    key: str


@dataclass(frozen=True)
class StageStarted:  # handed to Ray, which holds it while its inputs run; its workers' progress lines go to the file
    node: Node
    key: str
    progress_file: Path | None


@dataclass(frozen=True)
class StageFinished:
    node: Node
    key: str
    result: StageResult


@dataclass(frozen=True)
class StageFailed:  # with its own error (upstream None), or not run because the upstream stage named failed
    node: Node
    key: str
    error: str
    started: bool  # it had been handed to Ray
    upstream: str | None = None


@dataclass(frozen=True)
class Heartbeat:  # the runner waited for running stages (seconds at most): their new progress lines are due
    pass

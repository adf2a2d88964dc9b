"""Every path bioray writes under a workflow's workdir, derived in one place and checked.

Stage outputs, their temporary directories, downloaded models, the run lock and state, the MLflow
store and Ray Train's default storage all come from `Workdir`. Each path is resolved (symlinks
included) and refused when it lands outside the workdir, so no name in a workflow, and no symlink
planted inside the workdir, can make bioray write or delete anywhere else. Deleting goes through
`Workdir.remove`, which only removes inside `stages/`, `runs/` and `models/`.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path


def disk_size(path: Path) -> int:
    """Bytes of a file, or of every file under a directory (symlinks not followed)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


class UnsafePath(ValueError):
    """A path bioray was about to write or delete resolves outside the workdir."""


class Workdir:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def path(self, *parts: str) -> Path:
        """root/parts..., refused unless it resolves (following every symlink) inside the workdir."""
        joined = self.root.joinpath(*parts)
        resolved = joined.resolve()
        if resolved != self.root and not resolved.is_relative_to(self.root):
            raise UnsafePath(f"{joined} resolves to {resolved}, outside the workdir {self.root}: refused "
                             "(a symlink inside the workdir, or a name with a path in it)")
        return joined

    # --- stage outputs ------------------------------------------------------------------------

    @property
    def stages(self) -> Path:
        return self.path("stages")

    def stage_family(self, name: str) -> Path:
        """The directory of every output of one stage instance (`finetune/<dataset>/seed-<n>`)."""
        return self.path("stages", *name.split("/"))

    def stage_dir(self, name: str, key: str) -> Path:
        """A stage's committed output: `stages/<name>/<key>`."""
        return self.path("stages", *name.split("/"), key)

    def stage_scratch(self, name: str, key: str) -> Path:
        """Work of a stage that outlives one attempt (a run resumed after its driver died finds it), kept
        beside its outputs until the stage commits."""
        return self.path("stages", *name.split("/"), f".scratch-{key}")

    def stage_tmp(self, name: str, key: str) -> Path:
        """Where a stage writes before its output is committed by a rename (readers skip dot names)."""
        return self.path("stages", *name.split("/"), f".tmp-{key}-{uuid.uuid4().hex[:8]}")

    def log_file(self, name: str) -> Path:
        """A command's full log (the terminal shows bioray's own lines: bioray.console)."""
        return self.path("logs", name)

    # the runs' bookkeeping is kept apart from the outputs: a full or read-only stages/ volume fails its
    # stage cleanly and keeps nothing of it

    @property
    def runs(self) -> Path:
        return self.path("runs")

    def stage_progress(self, name: str, key: str) -> Path:
        """The progress lines of a running stage's work, for the driver's terminal: bioray.progress."""
        return self.path("runs", *name.split("/"), f"{key}.progress.log")

    def stage_state(self, name: str, key: str) -> Path:
        """What is known of an uncommitted stage run (running, failed): bioray.pipeline.stage_state."""
        return self.path("runs", *name.split("/"), f"{key}.state.json")

    # --- everything else bioray keeps here ----------------------------------------------------

    def model_download(self, *parts: str) -> Path:
        """Where a registered model used as a starting point is downloaded (bioray.pipeline.model_refs)."""
        return self.path("models", *parts)

    @property
    def run_lock(self) -> Path:
        return self.path("repretrain.lock")

    @property
    def run_state(self) -> Path:
        return self.path("repretrain-state.json")

    @property
    def mlflow_db(self) -> Path:
        return self.path("mlflow.db")

    @property
    def mlflow_artifacts(self) -> Path:
        return self.path("mlartifacts")

    @property
    def train_storage(self) -> Path:
        return self.path("ray_train")

    # --- deleting -----------------------------------------------------------------------------

    def remove(self, target: Path) -> None:
        """Delete a directory tree (or a file) bioray made: only ever inside `stages/`, `runs/` or `models/`."""
        resolved = Path(target).resolve()
        allowed = [self.root / "stages", self.root / "runs", self.root / "models"]
        if not any(resolved.is_relative_to(base) and resolved != base for base in allowed):
            raise UnsafePath(f"{target}: bioray deletes only inside {', '.join(map(str, allowed))}; refused")
        if resolved.is_file():
            resolved.unlink(missing_ok=True)
        else:
            shutil.rmtree(resolved, ignore_errors=True)

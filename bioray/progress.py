"""A stage's progress lines (training steps with their ETA, epochs) from wherever its work runs (a Ray
Train worker, maybe on another node) to the terminal of the `bioray` driver running the pipeline.

The runner names a file per running stage (its StageEnv's progress_file; a stage hands it on to its
Ray Train workers, which `use` it); `report` logs a line as usual and appends it there, and the driver
prints the lines added since it last looked (`Tail`). Ray's forwarding of worker output is not needed
for them, so a quiet terminal can leave it off.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

_target: str | None = None  # this process's stage's progress file


def use(path: str | os.PathLike | None) -> None:
    """Where this process's progress lines go (None: the log only)."""
    global _target
    _target = str(path) if path else None


def report(logger: logging.Logger, message: str, *args) -> None:
    """Log the line, and append it to the running stage's progress file when there is one."""
    logger.info(message, *args)
    if _target:
        try:
            with open(_target, "a", encoding="utf-8") as sink:
                sink.write((message % args if args else message) + "\n")
        except OSError:  # a node that does not see the driver's workdir: the log has the line
            pass


class Tail:
    """The complete lines a progress file gained since the last call (none while it does not exist)."""

    def __init__(self, path: Path):
        self.path, self.offset = Path(path), 0

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as source:
                source.seek(self.offset)
                data = source.read()
        except FileNotFoundError:
            return []
        complete = data[:data.rfind(b"\n") + 1]  # a line still being written waits for the next call
        self.offset += len(complete)
        return complete.decode("utf-8", errors="replace").splitlines()

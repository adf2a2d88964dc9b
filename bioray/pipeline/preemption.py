"""SIGTERM on the driver (`bioray run`): the running pretrainings checkpoint their current step, then
the run stops, exit status 75 (EX_TEMPFAIL); `bioray run` again resumes from those checkpoints.

Kubernetes, Slurm and spot-instance agents stop a process with SIGTERM and kill it after a grace
period. While stages run, this handler replaces Ray's (which exits at once): it starts no new stage,
tells the pretrainings through Ray's KV (bioray.train.preemption) and waits for them, at most their
`pretrain.preemption_grace_s` from the signal. Other running stages (fine-tunes: a rerun costs less
than a checkpoint) are not waited for and run again next time. No stopped stage is committed.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time

from bioray.pipeline.stages.base import Node
from bioray.train.preemption import EXIT_CODE, clear_stop, request_stop

log = logging.getLogger(__name__)

__all__ = ["EXIT_CODE", "DriverPreempted", "DriverStop"]


class DriverPreempted(Exception):
    """The run stopped on SIGTERM; the message says what was checkpointed."""


class DriverStop:
    """Installed while the stages run; `settle` is called by the runner's loop."""

    def __init__(self):
        self.since: float | None = None
        self.told = False
        self.stopped: dict[str, str] = {}  # stage -> what its Preempted error said
        self.held = 0  # stages not started because of the signal
        self.previous = None
        if threading.current_thread() is threading.main_thread():  # Python takes signals there only
            self.previous = signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self.since is not None:  # a second SIGTERM: no more waiting
            raise DriverPreempted(self._message("a second SIGTERM came before the checkpoints"))
        self.since = time.monotonic()  # the loop tells the workers: no Ray call inside a signal handler

    @property
    def requested(self) -> bool:
        return self.since is not None

    def hold(self, waiting: list[Node]) -> None:
        self.held += len(waiting)
        waiting.clear()

    def settle(self, running: list[Node]) -> None:
        """Once SIGTERM came: raise DriverPreempted when no running stage is still checkpointing, or
        the longest grace of those running has passed. (A run whose every stage finished anyway is not
        preempted.)"""
        if self.since is None or not (running or self.stopped or self.held):
            return
        if not self.told:
            log.warning("SIGTERM: starting no new stage; running pretrainings checkpoint their current step")
            request_stop()
            self.told = True
        graces = [grace for node in running if (grace := node.stage.preemption_grace(node))]
        if not graces:
            raise DriverPreempted(self._message())
        if time.monotonic() - self.since > max(graces):
            raise DriverPreempted(self._message(f"no checkpoint within {max(graces):g} s"))

    def record(self, node: Node, error: str) -> None:
        self.stopped[node.name] = error.split(": ", 1)[-1]

    def _message(self, problem: str = "") -> str:
        saved = "; ".join(f"{name}: {what}" for name, what in self.stopped.items()) or "no stage checkpointed"
        return f"preempted (SIGTERM){': ' + problem if problem else ''}; {saved}"

    def close(self) -> None:
        if self.told:
            clear_stop()
        if self.previous is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, self.previous)

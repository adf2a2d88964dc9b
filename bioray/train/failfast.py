"""Fail fast: an error of the training code that a retry would only meet again fails the run at once.

Ray Train retries every worker error up to `FailureConfig.max_failures` (-1: forever), a bug as much as a
killed worker, and its failure policy is not pluggable (the trainer builds its DefaultFailurePolicy
itself; `FailureConfig(fail_fast=...)` is gone). What Ray offers is the errors themselves: a worker's
exception reaches the controller as the worker raised it, a dead worker as a RayActorError (inside a
WorkerHealthCheckFailedError); and a `UserCallback.after_exception` that sees them on the controller
before the policy decides, where an exception becomes a ControllerError, which the policy never
retries. So:

- a worker `tag`s the exception of its training code with the step its attempt started from and the
  step it failed at (optimizer steps done);
- `FailFast`, the callback, raises `Deterministic` for an exception before an attempt's first step
  (setup: a bad shard, an empty folder — a resumed attempt included), or for the same exception (type
  and message) at the same step as the attempt before; anything untagged is a crash, left to Ray;
- the driver `unwrap`s it and raises the worker's own exception.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray.train import UserCallback

_STEPS = "bioray_steps"  # the attribute `tag` sets: (first step of the attempt, step at the error)


def _collateral(error: BaseException) -> bool:
    """An error a crash elsewhere causes (a collective losing its dead peer, a timeout, a dead Ray worker,
    node or object): the dead rank shows up a moment later, or never (a lost node), so these stay retried.
    A Ray task's error from user code (a Ray Data read of a bad shard) is the worker's own: judged."""
    import ray.exceptions as rx
    import torch.distributed

    crashes = (ConnectionError, TimeoutError, torch.distributed.DistError, rx.RayActorError, rx.WorkerCrashedError,
               rx.LocalRayletDiedError, rx.NodeDiedError, rx.ObjectLostError, rx.RaySystemError, rx.OutOfMemoryError,
               rx.ObjectStoreFullError, rx.RpcError)
    return (isinstance(error, crashes) or isinstance(getattr(error, "cause", None), crashes)
            or "gloo/transport" in str(error))  # gloo's "Connection closed by peer" is a plain RuntimeError


def tag(error: BaseException, first_step: int | None, step: int | None) -> None:
    """On a worker: mark an exception of the training code (not a collateral one) with the step its attempt
    started from and the step it was raised at (None for both: before the engine existed)."""
    if not _collateral(error):
        setattr(error, _STEPS, (first_step, step))


@dataclass(frozen=True)
class _Failure:
    kind: str
    message: str
    step: int | None
    before_first_step: bool


def _failure(error: BaseException) -> _Failure | None:
    steps = getattr(error, _STEPS, None)
    if steps is None:
        return None
    first_step, step = steps
    return _Failure(type(error).__name__, str(error), step, step is None or step == first_step)


class Deterministic(Exception):
    """A worker's exception that a retry would meet again, and why (raised on the controller)."""

    def __init__(self, error: BaseException, reason: str):
        super().__init__(f"{type(error).__name__}: {error} ({reason})")
        self.error, self.reason = error, reason

    def __reduce__(self):
        return self.__class__, (self.error, self.reason)


class FailFast(UserCallback):
    """On the Ray Train controller: raises `Deterministic` for a failed attempt that a retry would repeat;
    keeps the last attempt's failures to compare the next one's with."""

    def __init__(self):
        self.attempt = 0
        self.previous: set[_Failure] = set()

    def after_exception(self, run_context, worker_exceptions: dict[int, Exception]) -> None:
        self.attempt += 1
        failures = {rank: _failure(error) for rank, error in worker_exceptions.items()}
        if any(failure is None for failure in failures.values()):  # a crash: the others' errors may be its echo
            self.previous = set()
            return
        repeated = self.previous & set(failures.values())
        self.previous = set(failures.values())
        for rank in sorted(failures):
            failure = failures[rank]
            if failure.before_first_step:
                reason = f"raised before the first optimizer step of attempt {self.attempt}, on rank {rank}"
            elif failure in repeated:
                reason = f"raised at step {failure.step} on attempts {self.attempt - 1} and {self.attempt} alike"
            else:
                continue
            raise Deterministic(worker_exceptions[rank], reason)


def unwrap(error: BaseException) -> BaseException:
    """The worker's own exception behind a run that FailFast ended, with why it was not retried as a note;
    any other error as it is."""
    failure = getattr(error, "controller_failure", None)  # ray.train.ControllerError's
    if not isinstance(failure, Deterministic):
        return error
    # not shaped `Type: text`: a stage's one-line error (its traceback's last such line) stays the worker's
    failure.error.add_note(f"not retried (fail fast): {failure.reason}")
    return failure.error

"""Preemption: the checkpoint of the current step when the run is about to be stopped.

Two notices reach a pretraining's workers:
- the driver got SIGTERM (`bioray run` stopped by Kubernetes, a scheduler, a spot notice on the head):
  the driver sets a flag in Ray's internal KV under its job id, which rank 0 reads after every step;
  the workers checkpoint the current step and stop, and the stage raises `Preempted` (not committed);
- a node of the run is draining (`ray drain-node --reason PREEMPTION`, what KubeRay and the autoscaler
  do on a spot notice): Ray Train's PreemptionWatcher tells the workers (`ray.train.get_preemption_info`);
  they checkpoint the current step once and train on, and Ray Train restarts the run from that
  checkpoint when the node goes (FailureConfig.max_preemption_failures).

All ranks agree on the step: the flags are combined by one all-reduce every step, so every rank
checkpoints after the same optimizer step and none waits in a collective the others skipped.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

NAMESPACE = "bioray"
EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): stopped on purpose, run it again to go on
NONE, DRAIN, STOP = 0, 1, 2  # what the workers do: nothing, checkpoint and go on, checkpoint and stop


class Preempted(RuntimeError):
    """A stage checkpointed its current step and stopped because the driver is being stopped."""


def stop_key(job_id: str) -> bytes:
    """The flag of one driver's stages: every task and actor of a driver shares its Ray job id."""
    return f"preempt:{job_id}".encode()


def request_stop() -> None:
    """On the driver: ask the pretrainings it started to checkpoint now and stop."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(stop_key(ray.get_runtime_context().get_job_id()), b"1", namespace=NAMESPACE)


def clear_stop() -> None:
    """On the driver, once its stages stopped: a cluster outlives its drivers."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_del

    _internal_kv_del(stop_key(ray.get_runtime_context().get_job_id()), namespace=NAMESPACE)


def stop_requested() -> bool:
    import ray
    from ray.experimental.internal_kv import _internal_kv_get

    return _internal_kv_get(stop_key(ray.get_runtime_context().get_job_id()), namespace=NAMESPACE) is not None


class PreemptionCheck:
    """On every Ray Train worker, called by every rank after every optimizer step: what to do now.
    Costs one KV read on rank 0, Ray Train's preemption broadcast and one 1-element all-reduce."""

    def __init__(self, rank: int, device):
        self.rank, self.device = rank, device
        self.drained_at: int | None = None  # a node drain is answered with one checkpoint, not one per step

    def __call__(self, step: int) -> int:
        import ray.train  # here: the driver imports this module without Ray or torch
        import torch
        import torch.distributed as dist

        local = STOP if self.rank == 0 and stop_requested() else NONE
        # Ray Train's own answer is already the same on every rank (it broadcasts rank 0's)
        drain = ray.train.get_preemption_info() is not None and self.drained_at is None
        flags = torch.tensor([max(local, DRAIN if drain else NONE)], dtype=torch.int64, device=self.device)
        if dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        action = int(flags.item())
        if action == DRAIN:
            self.drained_at = step
        if action and self.rank == 0:
            log.warning("step %d: %s: checkpointing it now", step,
                        "the driver is being stopped" if action == STOP else "a node of this run is draining")
        return action

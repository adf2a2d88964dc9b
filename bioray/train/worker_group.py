"""Long-lived training worker groups: Ray actors that keep their imports and their torch.distributed
process group from one fine-tune to the next.

Ray Train V2 builds a new worker group for every `fit()` (~18 s here: actors, process group, imports
in the train function), and a BLURB-style evaluation is hundreds of small fine-tunes. Ray's guidance
for many small trainings is Ray Core: these are plain actors, gang-placed by a placement group, with
the process group Ray Train would set up (gloo on CPU, NCCL on GPU, the same environment variables).
A group runs one job at a time; the pipeline runner lends one to each fine-tuning stage
(bioray.pipeline.runner) and keeps it for the next stage of the same scaling. The stage itself runs
on rank 0 (`execute`): no process of its own to start and fill with imports, no job to copy over.

Failure semantics: an exception in a job fails the job, and whoever lent the group shuts it down (its
ranks may be stuck in a collective); a worker that dies raises WorkerCrashed, which the runner retries
on a new group.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

# A collective that waits longer than this has lost a rank (the group is torn down on a failure before).
COLLECTIVE_TIMEOUT_S = 1800
PING_TIMEOUT_S = 10  # a live worker answers in milliseconds, even while it trains


@dataclass(frozen=True)
class Scaling:
    """What a group is: its workers (one CPU, or one GPU, each) and the modules they import once, before
    their first job. Stages of the same scaling share groups."""

    num_workers: int
    use_gpu: bool = False
    imports: tuple[str, ...] = ()


class WorkerCrashed(RuntimeError):
    """A worker of the group died (killed process, lost node): the job may succeed on a new group."""


@ray.remote
class TrainingWorker:
    """One rank. Imports the training code once, joins the group's process group once, then runs jobs."""

    def __init__(self, rank: int, world: int, use_gpu: bool, imports: tuple[str, ...]):
        import importlib

        import torch

        for module in imports:  # paid once per worker, not once per job
            importlib.import_module(module)
        self.rank, self.world, self.use_gpu = rank, world, use_gpu
        self.address, self.device = None, None
        torch.set_num_threads(1)  # it holds one CPU (Ray Train's workers are set up the same way)

    def placement(self) -> tuple[str, list[int]]:
        """Its node and GPU ids, for the local ranks and the devices each rank sees."""
        return ray.get_runtime_context().get_node_id(), [int(g) for g in ray.get_gpu_ids()]

    def rendezvous(self) -> tuple[str, int]:
        """Rank 0: the address and port of the process group's store (a free port, chosen once)."""
        if self.address is None:
            with socket.socket() as probe:
                probe.bind(("", 0))
                self.address = ray.util.get_node_ip_address(), probe.getsockname()[1]
        return self.address

    def join(self, address: tuple[str, int], node_ranks: list[int], node_gpus: list[int]) -> None:
        """The process group, and the environment Ray Train gives its workers (DeepSpeed reads it); once.
        node_ranks, node_gpus: the group's ranks and GPUs on this worker's node."""
        import datetime

        import torch
        import torch.distributed as dist

        if self.device is not None:
            return
        if self.use_gpu:  # every rank on a node sees the node's group GPUs, as under Ray Train (NCCL peer access)
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, node_gpus))
            local_rank = node_gpus.index(int(ray.get_gpu_ids()[0]))
            torch.cuda.set_device(local_rank)
        else:
            local_rank = node_ranks.index(self.rank)
        os.environ.update({"MASTER_ADDR": address[0], "MASTER_PORT": str(address[1]), "RANK": str(self.rank),
                           "WORLD_SIZE": str(self.world), "LOCAL_RANK": str(local_rank)})
        dist.init_process_group("nccl" if self.use_gpu else "gloo", init_method=f"tcp://{address[0]}:{address[1]}",
                                rank=self.rank, world_size=self.world,
                                timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
        self.device = f"cuda:{local_rank}" if self.use_gpu else "cpu"

    def execute(self, execute_node, *args):
        """A stage on this rank (rank 0): execute_node(*args), whose run hands its job to the group's
        ranks, this one included (another thread of this actor runs it)."""
        return execute_node(*args)

    def run(self, job) -> dict | None:
        """job.run(rank, world, device) on this rank (e.g. a bioray.train.finetune.FinetuneJob)."""
        return job.run(self.rank, self.world, self.device)


class WorkerGroup:
    """num_workers TrainingWorkers on a placement group (PACK: one node when it fits). Picklable: the
    runner creates it; the stage it lends it to runs on rank 0 and hands its job to every rank."""

    def __init__(self, scaling: Scaling):
        self.scaling = scaling
        bundle = {"CPU": 1, **({"GPU": 1} if scaling.use_gpu else {})}
        self.placement = placement_group([bundle] * scaling.num_workers, strategy="PACK")
        self.workers = [TrainingWorker.options(
            num_cpus=1, num_gpus=1 if scaling.use_gpu else 0, max_concurrency=3,  # a stage, its job, a ping
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement, placement_group_bundle_index=rank),
        ).remote(rank, scaling.num_workers, scaling.use_gpu, scaling.imports) for rank in range(scaling.num_workers)]

    @property
    def cpus(self) -> int:
        return self.scaling.num_workers

    def execute(self, execute_node, *args):
        """execute_node(*args) on rank 0, as a Ray task would run it; an ObjectRef of its result."""
        return self.workers[0].execute.remote(execute_node, *args)

    def start(self) -> None:
        """Join the ranks into one process group: waits for the actors (and their imports) the first time,
        a few milliseconds after (each worker joins once; this object may be a copy)."""
        placements = _get([w.placement.remote() for w in self.workers])
        address = _get(self.workers[0].rendezvous.remote())
        joins = []
        for rank, worker in enumerate(self.workers):
            node_ranks = [r for r, (node, _) in enumerate(placements) if node == placements[rank][0]]
            node_gpus = sorted(g for r in node_ranks for g in placements[r][1])
            joins.append(worker.join.remote(address, node_ranks, node_gpus))
        _get(joins)

    def run(self, job) -> dict | None:
        """The job on every rank; rank 0's result. On the first failure the others are not waited for
        (they may wait in a collective for the failed rank): whoever lent the group shuts it down."""
        self.start()
        shared = ray.put(job)  # one copy in the object store, read by every rank
        pending = [w.run.remote(shared) for w in self.workers]
        results: dict = {}
        while len(results) < len(pending):
            done, _ = ray.wait([r for r in pending if r not in results], num_returns=1)
            try:
                results[done[0]] = _get(done[0])
            except WorkerCrashed:
                raise
            except Exception:
                self._raise_if_a_rank_died()  # a rank's error may be its collective losing a dead peer
                raise
        return results[pending[0]]

    def _raise_if_a_rank_died(self) -> None:
        """WorkerCrashed when a rank does not answer a ping (each worker keeps a thread free for it)."""
        for worker in self.workers:
            try:
                ray.get(worker.placement.remote(), timeout=PING_TIMEOUT_S)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
                raise WorkerCrashed(f"a training worker died ({type(exc).__name__})") from None

    def shutdown(self) -> None:
        """Kill the workers and free their placement (again: nothing)."""
        for worker in self.workers:
            ray.kill(worker)
        with contextlib.suppress(Exception):  # removed already
            remove_placement_group(self.placement)


def _get(refs):
    """ray.get, a dead worker raised as WorkerCrashed."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayActorError as exc:
        raise WorkerCrashed(f"a training worker died ({type(exc).__name__}): {str(exc).splitlines()[0]}") from None


class WorkerGroups:
    """The runner's worker groups: each lent to one stage at a time, kept idle for the next stage of
    the same scaling, shut down when no stage waiting can use it (its CPUs go back to Ray)."""

    def __init__(self):
        self.idle: list[WorkerGroup] = []

    def lend(self, scaling: Scaling) -> WorkerGroup:
        for group in self.idle:
            if group.scaling == scaling:
                self.idle.remove(group)
                return group
        return WorkerGroup(scaling)

    def take_back(self, group: WorkerGroup) -> None:
        self.idle.append(group)

    def has_idle(self, scaling: Scaling) -> bool:
        return any(group.scaling == scaling for group in self.idle)

    @property
    def idle_cpus(self) -> int:
        return sum(group.cpus for group in self.idle)

    def release(self, keep: set[Scaling] = frozenset()) -> None:
        """Shut the idle groups down, but those of a scaling in `keep`."""
        for group in [g for g in self.idle if g.scaling not in keep]:
            self.idle.remove(group)
            group.shutdown()

"""What a stage kind is: one definition of its instances (with their inputs and the config they read),
its typed output and its run function. The runner and the planner know stages only through this."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from bioray.config import WorkflowConfig, is_mlflow_uri
from bioray.workdir import Workdir

if TYPE_CHECKING:  # mlflow is imported by the runs, not by planning or validation
    from bioray.tracking.context import RunContext


class StageOutput:
    """A committed stage output: its directory and the metrics its run reported. Subclasses name the
    files and folders downstream stages read (`IngestOutput.documents`, `PretrainOutput.model`, ...)."""

    def __init__(self, path: str | Path, metrics: dict):
        self.path, self.metrics = Path(path), metrics


Needs = Mapping[str, "str | tuple[str, ...]"]  # role -> the stage instance it reads, or several (in order)


@dataclass(frozen=True)
class Node:
    """One stage instance in a workflow's graph (fine-tuning has one per dataset, fold and seed): the
    instances it reads, by role, and its params, an instance of its stage's `Params` (validated when
    built: a stage never hands its run unchecked settings)."""

    name: str
    stage: Stage
    needs: Needs = field(default_factory=dict)
    params: BaseModel | None = None  # what the run reads (None: its stage's default Params); feeds the key
    files: tuple[str, ...] = ()  # raw input files; their fingerprints feed the key
    code: tuple[str, ...] = ()  # more root modules of the code key (a dataset's task type and format)

    def __post_init__(self):
        if self.params is None:
            object.__setattr__(self, "params", self.stage.Params())
        if not isinstance(self.params, self.stage.Params):
            raise TypeError(f"{self.name}: params must be a {self.stage.Params.__name__}, got {type(self.params)}")

    @property
    def kind(self) -> str:
        return self.stage.kind

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every instance it reads, in the order of its roles."""
        return tuple(name for names in self.needs.values() for name in ((names,) if isinstance(names, str) else names))

    def inputs_by_role(self, outputs: dict[str, StageOutput]) -> dict[str, Any]:
        """Its inputs' outputs (by instance name) as its run reads them: by role, one output or, for a role
        of several instances, {instance: output}."""
        return {role: outputs[names] if isinstance(names, str) else {name: outputs[name] for name in names}
                for role, names in self.needs.items()}

    def params_json(self) -> Any:
        """The params as plain JSON data (what the key hashes and stage.yaml records)."""
        return json.loads(self.params.model_dump_json())


@dataclass(frozen=True)
class StageEnv:
    """What a run needs beside its params and inputs; none of it is part of the stage key."""

    key: str
    context: RunContext  # the stage's MLflow run
    data_root: Path
    datasets_root: Path  # finetune.data_root (data_root unless set)
    train_storage: str  # a path or s3:// (bioray.storage)
    paths: Workdir
    earlier: tuple[Path, ...] = ()  # committed outputs of this stage with the same params and code
    replace: bool = False  # forced (`--force`): the new output replaces the committed one of the same key
    progress_file: Path | None = None  # where its progress lines go, for the driver's terminal (bioray.progress)
    # the training workers the runner lends it (Stage.worker_scaling): a bioray.train.worker_group.WorkerGroup,
    # not imported here, where it would put the training code into every stage's code key
    workers: Any = None
    ready_at: float | None = None  # time.time() when the runner found its inputs ready and submitted it
    storage_endpoint: str | None = None  # the S3 endpoint of an s3:// train_storage (None: AWS)

    def data_path(self, relative: str) -> Path:
        return (self.data_root / relative).resolve()

    def dataset_path(self, relative: str) -> Path:
        """A dataset entry's path (finetune.data_root; its files are in the stage key's fingerprints)."""
        return (self.datasets_root / relative).resolve()

    def scratch(self, name: str) -> Path:
        """The stage's work that survives a restart of its driver (removed when the stage commits)."""
        return self.paths.stage_scratch(name, self.key)


class NoParams(BaseModel):
    """The params of a stage that reads no settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Stage(ABC):
    kind: ClassVar[str]
    help: ClassVar[str]  # one line, for the CLI
    Params: ClassVar[type[BaseModel]] = NoParams  # what its run reads (every node's params is one, validated)
    output: ClassVar[type[StageOutput]] = StageOutput
    num_cpus: ClassVar[float] = 0  # stages that start Ray Data / Ray Train work hold no CPU themselves
    incremental: ClassVar[bool] = False  # builds on an earlier output (StageEnv.earlier)
    dataset_context: ClassVar[str | None] = None  # MLflow dataset context of its inputs (default: its kind)
    parent_metrics: ClassVar[bool] = False  # its metrics also go on the pipeline's parent run
    parent_artifacts: ClassVar[tuple[str, ...]] = ()  # files of its output also logged on the parent run
    headline: ClassVar[tuple[str, ...]] = ()  # metric-name patterns the terminal shows when it finishes
    volatile: ClassVar[tuple[str, ...]] = ()  # output files (glob patterns) recording when or where it ran, not
    # what it made (timings, MLflow run ids): left out of its content digest (bioray.pipeline.digest)
    large_artifacts: ClassVar[tuple[str, ...]] = ()  # files of its output logged on its run whatever their size
    # (compressed and capped when large: bioray.tracking.artifacts); the small .json/.md/.png/.yaml always are

    @abstractmethod
    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        """This stage's instances in a workflow (upstream: the nodes of the stages before it)."""

    @abstractmethod
    def run(self, node: Node, inputs: dict[str, Any], output: Path, env: StageEnv) -> dict:
        """Write the output into `output`; return the metrics. `inputs`: by role of `node.needs`, each
        a typed output (its stage's `output`), or {instance: output} for a role of several."""

    def training_workers(self, node: Node) -> int:
        """CPUs its Ray Train workers hold while it runs (0: it trains nothing); the runner starts it only
        when that many are free, so trainers never hold the CPUs their own data tasks wait for."""
        return 0

    def worker_scaling(self, node: Node):
        """The long-lived worker group it trains on (a bioray.train.worker_group.Scaling), lent by the
        runner as env.workers; None: it starts its own workers (Ray Train) or none."""
        return None

    def retries(self, node: Node) -> int:
        """Times the runner runs it again after a crash (a worker of its group died); an exception in its
        code fails it at once."""
        return 0

    def preemption_grace(self, node: Node) -> float:
        """Seconds the driver waits on SIGTERM for it to checkpoint its current step (0: it is not
        waited for, and runs again from the start next time)."""
        return 0.0

    def nondeterministic(self, node: Node) -> str | None:
        """Why this instance's output may differ from run to run under the same key (recorded with its
        digest and shown by `bioray status --digests`), or None: deterministic."""
        return None

    def headline_for(self, node: Node) -> tuple[str, ...]:
        """The metric-name patterns the terminal shows when this instance finishes (default: `headline`)."""
        return self.headline

    @property
    def code_roots(self) -> tuple[str, ...]:
        """The modules whose import closure is the stage's code key: the one defining it."""
        return (type(self).__module__,)


def validated(section: BaseModel, **changes) -> BaseModel:
    """A config section with some keys changed, validated as a whole (pydantic's model_copy is not)."""
    return type(section).model_validate({**section.model_dump(), **changes})


def checkpoint_files(config: WorkflowConfig, checkpoint: str | None) -> tuple[str, ...]:
    """The files of a local initial checkpoint (their fingerprints feed the key); an MLflow URI is
    resolved to a local copy when a run starts (bioray.pipeline.model_refs), so it has none yet."""
    if not checkpoint or is_mlflow_uri(checkpoint):
        return ()
    return tuple(str(p) for p in sorted(config.data_path(checkpoint).rglob("*")) if p.is_file())

"""What the driver tells a person while a pipeline runs, following the runner's stage events: a line per
stage as it is found cached, starts and finishes (`[i/N]`, its duration and key metrics), and the
progress lines of its work (training steps with ETA, epochs: bioray.progress). They go to the
`bioray.progress` logger, which the CLI shows on the terminal at every verbosity; everything else a run
logs goes to its log file."""

from __future__ import annotations

import fnmatch
import logging

from bioray.metric_names import STAGE_REPRODUCED, STAGE_SECONDS
from bioray.pipeline.events import Heartbeat, StageCached, StageFailed, StageFinished, StageStarted
from bioray.pipeline.stages.base import Node
from bioray.progress import Tail

log = logging.getLogger("bioray.progress")


def say(message: str, *args) -> None:
    """A line for the terminal that belongs to no stage."""
    log.info(message, *args)


class StageLines:
    """The terminal lines of a run's stages, following the runner's stage events."""

    def __init__(self, nodes: list[Node]):
        self.number = {node.name: index for index, node in enumerate(nodes, start=1)}
        self.count = len(nodes)
        self.tails: dict[str, Tail] = {}
        self.queued: dict[str, Node] = {}  # started, announced once their inputs are done
        self.done: set[str] = set()  # cached or finished

    def _prefix(self, name: str) -> str:
        return f"[{self.number[name]}/{self.count}] {name}"

    def __call__(self, event) -> None:
        match event:
            case StageCached(node, _, result):
                self.done.add(node.name)
                log.info("%s cached%s", self._prefix(node.name), _headline(node, result.metrics))
            case StageStarted(node, _, progress_file):  # `started` waits for its inputs: until then it only queues
                if progress_file is not None:
                    self.tails[node.name] = Tail(progress_file)
                self.queued[node.name] = node
                self._announce()
            case StageFinished(node, _, result):
                self._poll(node.name, stop=True)
                self.done.add(node.name)
                if self.queued.pop(node.name, None) is not None:  # collected before an upstream stage's result
                    log.info("%s started", self._prefix(node.name))
                log.info("%s done in %s%s", self._prefix(node.name),
                         _duration(result.metrics.get(STAGE_SECONDS, 0.0)), _headline(node, result.metrics))
                if result.metrics.get(STAGE_REPRODUCED) == 0:
                    reason = node.stage.nondeterministic(node)
                    log.warning("%s: forced again, it made a different output for the same key (%s): %s", node.name,
                                f"{result.path}/digest.json", f"expected, {reason}" if reason else
                                "this stage is not deterministic; please report it")
                self._announce()
            case StageFailed(node):
                self._poll(node.name, stop=True)
            case Heartbeat():
                self._poll()

    def _announce(self) -> None:
        """The `started` lines of the queued stages whose inputs are all done."""
        for name, queued in list(self.queued.items()):
            if all(upstream in self.done for upstream in queued.inputs):
                del self.queued[name]
                log.info("%s started", self._prefix(name))

    def _poll(self, name: str | None = None, stop: bool = False) -> None:
        """Print the progress lines the running stages (or one of them) wrote since the last poll; `stop`:
        its last ones, before its result."""
        for stage, tail in list(self.tails.items()):
            if name is None or stage == name:
                for line in tail.new_lines():
                    log.info("%s | %s", self._prefix(stage), line, extra={"transient": True})
        if stop:
            self.tails.pop(name, None)


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{seconds:.1f}s"


def _headline(node: Node, metrics: dict) -> str:
    """The stage instance's key metrics (its headline patterns), at most three."""
    shown = [(key, value) for pattern in node.stage.headline_for(node) for key, value in sorted(metrics.items())
             if fnmatch.fnmatchcase(key, pattern) and isinstance(value, int | float)][:3]
    return "".join(f"  {key} {value:.4g}" if isinstance(value, float) else f"  {key} {value:,}"
                   for key, value in shown)

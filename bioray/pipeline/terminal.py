"""What the driver tells a person while a pipeline runs: a line per stage as it is found cached, starts
and finishes (`[i/N]`, its duration and key metrics), and the progress lines of its work (training
steps with ETA, epochs: bioray.progress). They go to the `bioray.progress` logger, which the CLI shows
on the terminal at every verbosity; everything else a run logs goes to its log file."""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path

from bioray.metric_names import STAGE_SECONDS
from bioray.pipeline.stages.base import Node
from bioray.progress import Tail

log = logging.getLogger("bioray.progress")


def say(message: str, *args) -> None:
    """A line for the terminal that belongs to no stage."""
    log.info(message, *args)


class StageLines:
    def __init__(self, nodes: list[Node]):
        self.number = {node.name: index for index, node in enumerate(nodes, start=1)}
        self.count = len(nodes)
        self.tails: dict[str, Tail] = {}
        self.queued: dict[str, Node] = {}  # submitted, announced once their inputs are done

    def _prefix(self, name: str) -> str:
        return f"[{self.number[name]}/{self.count}] {name}"

    def cached(self, node: Node, result) -> None:
        log.info("%s cached%s", self._prefix(node.name), _headline(node, result.metrics))

    def submitted(self, node: Node, progress_file: Path | None, ready: bool) -> None:
        """A stage handed to Ray; its `started` line waits until its inputs are done (`ready`), since a
        stage chained to running ones only queues."""
        if progress_file is not None:
            self.tails[node.name] = Tail(progress_file)
        if ready:
            log.info("%s started", self._prefix(node.name))
        else:
            self.queued[node.name] = node

    def finished(self, node: Node, result, done: dict) -> None:
        """Its line, then the `started` lines of the queued stages whose inputs (`done`) are now all in."""
        if self.queued.pop(node.name, None) is not None:  # collected before an upstream stage's result
            log.info("%s started", self._prefix(node.name))
        log.info("%s done in %s%s", self._prefix(node.name), _duration(result.metrics.get(STAGE_SECONDS, 0.0)),
                 _headline(node, result.metrics))
        for name, queued in list(self.queued.items()):
            if all(upstream in done for upstream in queued.inputs):
                del self.queued[name]
                log.info("%s started", self._prefix(name))

    def stopped(self, name: str) -> None:
        """Its last progress lines, before its result."""
        self.poll(name)
        self.tails.pop(name, None)

    def poll(self, name: str | None = None) -> None:
        """Print the progress lines the running stages (or one of them) wrote since the last poll."""
        for stage, tail in list(self.tails.items()):
            if name is None or stage == name:
                for line in tail.new_lines():
                    log.info("%s | %s", self._prefix(stage), line, extra={"transient": True})


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{seconds:.1f}s"


def _headline(node: Node, metrics: dict) -> str:
    """The stage instance's key metrics (its headline patterns), at most three."""
    shown = [(key, value) for pattern in node.stage.headline_for(node) for key, value in sorted(metrics.items())
             if fnmatch.fnmatchcase(key, pattern) and isinstance(value, int | float)][:3]
    return "".join(f"  {key} {value:.4g}" if isinstance(value, float) else f"  {key} {value:,}"
                   for key, value in shown)

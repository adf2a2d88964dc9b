"""The papers' published test scores (published.yaml) and which of them a dataset entry is reported
beside: its `benchmark:` (a known entry, or `none`), else its own name when that is a known entry.
An entry is checked against the benchmark's task type, metric and protocol (single split or k folds)
before anything runs, so a score is never placed beside numbers it cannot be compared with."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

NONE = "none"  # `benchmark: none`: no published numbers for this dataset


@cache
def published() -> dict:
    return yaml.safe_load(resources.files("bioray.tasks").joinpath("published.yaml").read_text())


def benchmark_of(dataset) -> str | None:
    """The published entry a dataset reports beside (None: none)."""
    if dataset.benchmark is not None:
        return None if dataset.benchmark == NONE else dataset.benchmark
    return dataset.name if dataset.name in published()["benchmarks"] else None


def benchmark_problems(dataset, metric: str) -> list[str]:
    """What stops an entry's score from sitting beside its benchmark's numbers, as `key: problem` lines."""
    known = published()["benchmarks"]
    if dataset.benchmark is not None and dataset.benchmark != NONE and dataset.benchmark not in known:
        return [f"benchmark: unknown benchmark {dataset.benchmark!r} (known: {', '.join(sorted(known))}; or "
                f"`{NONE}` for a dataset without published numbers)"]
    name = benchmark_of(dataset)
    if name is None:
        return []
    entry, key = known[name], "benchmark" if dataset.benchmark else "name"
    if entry["task"] != dataset.task:
        return [f"{key}: benchmark {name!r} is a {entry['task']} task, not {dataset.task}; set `benchmark:` to a "
                f"{dataset.task} entry or `{NONE}`"]
    if entry["metric"] != metric:
        return [f"{key}: benchmark {name!r} publishes {entry['metric']}, this entry is scored by {metric}; set "
                f"`metric: {entry['metric']}` or `benchmark: {NONE}`"]
    folds = len(dataset.folds) if dataset.folds else None
    if folds != entry.get("folds"):
        setup = f"{folds}-fold cross-validation" if folds else "a single split"
        others = [f"{n} ({e.get('folds') or 1} fold{'s' if e.get('folds') else ''})" for n, e in known.items()
                  if n != name and e["task"] == dataset.task and n.split("-")[0] == name.split("-")[0]]
        return [f"{key}: benchmark {name!r} is {_folds(entry)}, this entry {setup}: not comparable; set `benchmark:` "
                + (f"to another protocol's entry ({', '.join(others)}) or `{NONE}`" if others else f"`{NONE}`")]
    return []


def _folds(entry: dict) -> str:
    return f"{entry['folds']}-fold cross-validation" if entry.get("folds") else "a single split"

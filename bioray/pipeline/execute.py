"""Running one stage: its run function into a temporary directory, committed by an atomic rename."""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from bioray import progress
from bioray.metric_names import STAGE_REPRODUCED, STAGE_SECONDS
from bioray.pipeline.digest import DIGEST_FILE, content_digest, differing_files, read_digest
from bioray.pipeline.plan import node_code
from bioray.pipeline.stages.base import Node, StageEnv
from bioray.workdir import Workdir

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    name: str
    key: str
    path: str  # the committed output directory, wherever the workdir is now (never stored in the output)
    metrics: dict
    cached: bool = False

    @classmethod
    def load(cls, directory: Path, cached: bool = True) -> StageResult:
        stored = json.loads((directory / "result.json").read_text())
        return cls(stored["name"], stored["key"], str(directory), stored["metrics"], cached)

    def save(self, directory: Path) -> None:
        """result.json: no absolute path in it, so a copied or moved workdir keeps its cache."""
        (directory / "result.json").write_text(json.dumps({"name": self.name, "key": self.key,
                                                           "metrics": self.metrics}, indent=2))


def earlier_outputs(paths: Workdir, node: Node) -> tuple[Path, ...]:
    """Committed outputs of this stage made with the same params and code (inputs may differ): what an
    incremental stage can build on."""
    found = []
    for stage_file in paths.stage_family(node.name).glob("*/stage.yaml"):
        done = yaml.safe_load(stage_file.read_text())
        if (stage_file.parent / "result.json").is_file() and done.get("params") == node.params_json() \
                and done.get("code") == node_code(node):
            found.append(stage_file.parent)
    return tuple(found)


def execute_node(node: Node, key: str, env: StageEnv, input_types: dict[str, type],
                 *upstream: StageResult) -> StageResult:
    """Run one stage (a Ray task) into a temporary directory, then commit it with an atomic rename.
    input_types: the output type of each input's stage kind (StageOutput subclasses)."""
    from bioray.tracking.store import activate

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    activate(env.context.tracking_uri)
    progress.use(env.progress_file)
    for module in node.code:  # its dataset's task type and format: a plugin's registers them in this process
        importlib.import_module(module)
    final, tmp = env.paths.stage_dir(node.name, key), env.paths.stage_tmp(node.name, key)
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:  # read-only volume, full disk, a file where the directory should be
        raise OSError(f"stage {node.name}: cannot write its output under {final.parent}: "
                      f"{exc.strerror or exc}") from exc
    try:
        import ray  # the node the stage ran on: on a cluster, where to look for its logs

        env.context.set_tag("ray.node_id", ray.get_runtime_context().get_node_id())
        inputs = node.inputs_by_role({u.name: input_types[u.name](u.path, u.metrics) for u in upstream})
        started = time.perf_counter()
        metrics = node.stage.run(node, inputs, tmp, env)
        metrics[STAGE_SECONDS] = time.perf_counter() - started
        digest = content_digest(tmp, node.stage.volatile)
        if reason := node.stage.nondeterministic(node):
            digest["nondeterministic"] = reason
        if env.replace and (replaced := read_digest(final)) is not None:  # forced: did it reproduce its output?
            differing = differing_files(replaced, digest)
            metrics[STAGE_REPRODUCED] = float(not differing)
            digest["replaced"] = {"digest": replaced["digest"], "differing": differing}
            if differing:
                log.warning("%s: its new output differs from the one it replaces (same key) in %s: %s",
                            node.name, ", ".join(differing[:5]), f"expected, {reason}" if reason else
                            "a stage that is not deterministic; please report it")
        (tmp / DIGEST_FILE).write_text(json.dumps(digest, indent=2))
        (tmp / "stage.yaml").write_text(yaml.safe_dump({"name": node.name, "key": key, "params": node.params_json(),
                                                        "code": node_code(node),
                                                        "inputs": {u.name: u.key for u in upstream}}, sort_keys=False))
        result = StageResult(node.name, key, str(final), metrics)
        result.save(tmp)
        if final.exists() and env.replace:  # forced: the old output goes once the new one is complete
            old = env.paths.stage_tmp(node.name, key)
            os.rename(final, old)
            os.rename(tmp, final)
            env.paths.remove(old)
        elif final.exists():  # a concurrent run committed the same key first: keep its output
            env.paths.remove(tmp)
        else:
            os.rename(tmp, final)
        scratch = env.paths.stage_scratch(node.name, key)
        if scratch.exists():
            env.paths.remove(scratch)
        return result
    except BaseException:
        env.paths.remove(tmp)
        raise

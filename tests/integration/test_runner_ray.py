"""The runner on a real Ray: stage tasks wired by their inputs, stages that need a training slot queued
for one instead of starting trainers that would idle, every one completing. The stage kinds here are
cheap stand-ins defined in this file (a run function that records when it ran), which also shows that
a stage kind is one definition the runner needs nothing else for."""

from __future__ import annotations

import sys
import time

import pytest
from ray import cloudpickle  # Ray's own copy: what ships the stand-in run function to the workers

from bioray.pipeline.inputs import load_checked
from bioray.pipeline.runner import run_nodes
from bioray.pipeline.stages.base import Node, Stage
from tests.support.workflows import mlflow_state_kept, small_workflow, write_workflow

SEEDS = range(5)


class Upstream(Stage):
    kind, help = "stand-in-pretrain", "Says when it is done."

    def nodes(self, config, upstream):
        return [Node("pretrain", self)]

    def run(self, node, inputs, output, env) -> dict:
        return {"ran/to": time.time()}


class Training(Stage):
    """Stand-in for fine-tuning: holds a training slot for a second and says when."""

    kind, help, training_slot = "stand-in-finetune", "Trains for a while.", True

    def nodes(self, config, upstream):
        return [Node(f"finetune/d/seed-{seed}", self, ("pretrain",), {"seed": seed}) for seed in SEEDS]

    def run(self, node, inputs, output, env) -> dict:
        started = time.time()
        time.sleep(1.0)
        return {"ran/from": started, "ran/to": time.time(), "ran/after": inputs["pretrain"].metrics["ran/to"]}


@pytest.fixture
def stand_ins():
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_fine_tuning_stages_queue_for_training_slots(ray_session, stand_ins, data_root, tmp_path):
    config = load_checked(write_workflow(small_workflow(tmp_path / "work", data_root), tmp_path / "wf.yaml"))
    nodes = Upstream().nodes(config, [])
    nodes += Training().nodes(config, nodes)
    with mlflow_state_kept():
        summary = run_nodes(config, nodes)

    slots = int(ray_session.cluster_resources()["CPU"] - 1)  # one worker each, one CPU left to data tasks
    assert slots < len(SEEDS) and summary.failed == {}
    tuned = {name: result.metrics for name, result in summary.results.items() if name.startswith("finetune/")}
    assert sorted(tuned) == sorted(f"finetune/d/seed-{seed}" for seed in SEEDS)
    # each started after its input was done, and got its input's result
    pretrain_done = summary.results["pretrain"].metrics["ran/to"]
    assert all(m["ran/after"] == pretrain_done and m["ran/from"] >= pretrain_done for m in tuned.values())
    # all five were ready at once: as many started as there are slots, the rest waited in the runner
    assert len(summary.waited_for_slot) == len(SEEDS) - slots
    events = sorted([(m["ran/from"], 1) for m in tuned.values()] + [(m["ran/to"], -1) for m in tuned.values()])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    assert most <= slots  # never more training at once than the slots

"""The runner on a real Ray: stage tasks wired by their inputs, fine-tuning stages queued for training
slots instead of starting trainers that would idle, every one completing. The stages here are cheap
stand-ins (a run function that records when it ran) so the scheduling is what costs time."""

from __future__ import annotations

import sys
import time

import pytest
from ray import cloudpickle  # Ray's own copy: what ships the stand-in run function to the workers

from bioray.config import load_workflow
from bioray.pipeline.plan import Node
from bioray.pipeline.runner import run_nodes
from tests.support.workflows import mlflow_state_kept, small_workflow, write_workflow

SEEDS = range(5)


def _train_for_a_while(config, node, output, upstream, context) -> dict:
    """Stand-in for a fine-tuning run: holds its slot for a second and says when."""
    started = time.time()
    time.sleep(1.0)
    return {"ran/from": started, "ran/to": time.time(), "ran/after_pretrain": float("pretrain" in upstream)}


def _pretend_pretrain(config, node, output, upstream, context) -> dict:
    return {"ran/to": time.time()}


@pytest.fixture
def stand_ins():
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_fine_tuning_stages_queue_for_training_slots(ray_session, stand_ins, data_root, tmp_path):
    config = load_workflow(write_workflow(small_workflow(tmp_path / "work", data_root), tmp_path / "wf.yaml"))
    nodes = [Node("pretrain", "pretrain", (), {}, run=_pretend_pretrain)]
    nodes += [Node(f"finetune/d/seed-{seed}", "finetune", ("pretrain",), {"seed": seed}, run=_train_for_a_while)
              for seed in SEEDS]
    with mlflow_state_kept():
        summary = run_nodes(config, nodes)

    slots = int(ray_session.cluster_resources()["CPU"] - 1)  # one worker each, one CPU left to data tasks
    assert slots < len(SEEDS) and summary.failed == {}
    tuned = {name: result.metrics for name, result in summary.results.items() if name.startswith("finetune/")}
    assert sorted(tuned) == sorted(f"finetune/d/seed-{seed}" for seed in SEEDS)
    # each started after its input was done, and got its input's result
    pretrain_done = summary.results["pretrain"].metrics["ran/to"]
    assert all(m["ran/after_pretrain"] == 1.0 and m["ran/from"] >= pretrain_done for m in tuned.values())
    # all five were ready at once: as many started as there are slots, the rest waited in the runner
    assert len(summary.waited_for_slot) == len(SEEDS) - slots
    events = sorted([(m["ran/from"], 1) for m in tuned.values()] + [(m["ran/to"], -1) for m in tuned.values()])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    assert most <= slots  # never more training at once than the slots

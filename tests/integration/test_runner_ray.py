"""The runner on a real Ray: stage tasks wired by their inputs, training stages started only when
their workers' CPUs are free (one CPU always left to data tasks, so two pretrainings never starve
each other's reads), every one completing. The stage kinds here are cheap stand-ins defined in this
file (a run function that records when it ran), which also shows that a stage kind is one definition
the runner needs nothing else for."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from pydantic import BaseModel
from ray import cloudpickle  # Ray's own copy: what ships the stand-in run function to the workers

from bioray.config import ConfigError
from bioray.pipeline.execute import StageResult
from bioray.pipeline.inputs import load_checked
from bioray.pipeline.runner import run_nodes
from bioray.pipeline.stages.base import Node, Stage
from tests.support.workflows import mlflow_state_kept, small_workflow, write_workflow

SEEDS = range(5)
PRETRAIN_WORKERS, FINETUNE_WORKERS = 2, 1


class Tokenizing(Stage):
    """Stand-in for the continued arm's tokenize stage: no training, done after a while."""

    kind, help = "stand-in-tokenize", "Says when it is done."

    def nodes(self, config, upstream):
        return [Node("tokenize/continued", self)]

    def run(self, node, inputs, output, env) -> dict:
        time.sleep(1.5)
        return {"ran/to": time.time()}


class Pretraining(Stage):
    """Stand-in for two pretrainings (the workflow's, and a continued arm's after its tokenize), two
    workers each."""

    kind, help = "stand-in-pretrain", "Trains for a while, says when."

    def nodes(self, config, upstream):
        return [Node("pretrain", self), Node("pretrain/continued", self, {"tokens": "tokenize/continued"})]

    def training_workers(self, node):
        return PRETRAIN_WORKERS

    def run(self, node, inputs, output, env) -> dict:
        started = time.time()
        time.sleep(1.0)
        return {"ran/from": started, "ran/to": time.time()}


class SeedParams(BaseModel):
    seed: int


class Finetuning(Stage):
    """Stand-in for fine-tuning from the workflow's pretraining: one worker each, longer than a
    pretraining here, so the continued one becomes ready while they hold every training CPU."""

    kind, help, Params = "stand-in-finetune", "Trains for a while, says when.", SeedParams

    def nodes(self, config, upstream):
        return [Node(f"finetune/d/seed-{seed}", self, {"encoder": "pretrain"}, SeedParams(seed=seed)) for seed in SEEDS]

    def training_workers(self, node):
        return FINETUNE_WORKERS

    def run(self, node, inputs, output, env) -> dict:
        started = time.time()
        time.sleep(3.0)
        return {"ran/from": started, "ran/to": time.time(), "ran/after": inputs["encoder"].metrics["ran/to"]}


@pytest.fixture
def stand_ins():
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_training_stages_start_when_their_cpus_are_free(ray_session, stand_ins, data_root, tmp_path):
    config = load_checked(write_workflow(small_workflow(tmp_path / "work", data_root), tmp_path / "wf.yaml"))
    nodes = Tokenizing().nodes(config, [])
    nodes += Pretraining().nodes(config, nodes)
    nodes += Finetuning().nodes(config, nodes)
    with mlflow_state_kept():
        summary = run_nodes(config, nodes)

    budget = ray_session.cluster_resources()["CPU"] - 1  # one CPU left to data tasks
    assert PRETRAIN_WORKERS * 2 > budget and len(SEEDS) * FINETUNE_WORKERS > budget and summary.failed == {}
    ran = {name: result.metrics for name, result in summary.results.items()}
    assert sorted(ran) == sorted(node.name for node in nodes)
    # each fine-tune started after its input was done (never holding CPUs while it waited), with its result
    pretrain_done = ran["pretrain"]["ran/to"]
    tuned = [m for name, m in ran.items() if name.startswith("finetune/")]
    assert all(m["ran/after"] == pretrain_done and m["ran/from"] >= pretrain_done for m in tuned)
    # the two pretrainings did not overlap; the stages that found too few free CPUs waited in the runner
    assert ran["pretrain/continued"]["ran/from"] >= ran["pretrain"]["ran/to"]
    assert "pretrain/continued" in summary.waited_for_cpus
    # first come, first served: only the fine-tunes already running when it became ready started before it
    # (fine-tunes freeing one CPU at a time would otherwise keep it waiting until all were done)
    starts = sorted(m["ran/from"] for m in tuned)
    assert ran["pretrain/continued"]["ran/from"] < starts[int(budget)], (ran["pretrain/continued"], starts)
    trained = [m for m in _with_workers(ran) if "ran/from" in m]
    events = sorted([(m["ran/from"], m["workers"]) for m in trained] + [(m["ran/to"], -m["workers"]) for m in trained])
    held = most = 0
    for _, change in events:
        held += change
        most = max(most, held)
    assert most <= budget  # never more training workers at once than the budget


def _with_workers(ran: dict) -> list[dict]:
    return [{**m, "workers": PRETRAIN_WORKERS if name.startswith("pretrain") else FINETUNE_WORKERS}
            for name, m in ran.items() if not name.startswith("tokenize")]


def test_force_runs_a_stage_and_its_downstream_again(ray_session, stand_ins, data_root, tmp_path):
    config = load_checked(write_workflow(small_workflow(tmp_path / "work", data_root), tmp_path / "wf.yaml"))
    nodes = Tokenizing().nodes(config, [])
    nodes += Pretraining().nodes(config, nodes)
    with mlflow_state_kept():
        first = run_nodes(config, nodes)
        with pytest.raises(ConfigError, match=r"--force tokenize: no such stage in this workflow \(its stages: "
                                              r"tokenize/continued, pretrain, pretrain/continued\)"):
            run_nodes(config, nodes, force=("tokenize",))
        second = run_nodes(config, nodes, force=("stand-in-tokenize",))  # a kind: all its instances

    assert not any(result.cached for result in first.results.values())
    assert {name: result.cached for name, result in second.results.items()} == {
        "tokenize/continued": False, "pretrain/continued": False, "pretrain": True}
    for name in ("tokenize/continued", "pretrain/continued"):  # the new output replaced the old, same key
        assert second.results[name].key == first.results[name].key
        committed = StageResult.load(Path(second.results[name].path))
        new, old = second.results[name].metrics["ran/to"], first.results[name].metrics["ran/to"]
        assert committed.metrics["ran/to"] == new > old
    assert not list(config.paths.stages.rglob(".tmp-*"))
    # the cached stage's MLflow run points at the run that produced its output, with no copied metrics
    client = MlflowClient(config.tracking.uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment).experiment_id

    def pretrain_run(parent: str):
        query = f"tags.`mlflow.parentRunId` = '{parent}' and tags.`bioray.stage` = 'pretrain'"
        return client.search_runs([experiment], query)[0]

    cached = pretrain_run(second.parent_run_id)
    assert cached.data.tags["bioray.produced_by"] == pretrain_run(first.parent_run_id).info.run_id
    assert cached.data.metrics == {}


class Failing(Stage):
    """Stand-in for a pretraining that fails."""

    kind, help = "stand-in-failing", "Fails."

    def nodes(self, config, upstream):
        return [Node("pretrain", self)]

    def run(self, node, inputs, output, env) -> dict:
        raise RuntimeError("out of stand-in memory")


class Scoring(Stage):
    """Stand-in for a stage chained to the failing one: no training, so Ray holds it behind its input."""

    kind, help = "stand-in-score", "Scores."

    def nodes(self, config, upstream):
        return [Node("score", self, {"model": "pretrain"})]

    def run(self, node, inputs, output, env) -> dict:
        return {}


def test_a_failed_stage_fails_its_downstream_and_the_others_go_on(ray_session, stand_ins, data_root, tmp_path):
    from bioray.pipeline import stage_state
    from bioray.pipeline.plan import compute_keys

    config = load_checked(write_workflow(small_workflow(tmp_path / "work", data_root), tmp_path / "wf.yaml"))
    nodes = Tokenizing().nodes(config, []) + Failing().nodes(config, [])
    nodes += Scoring().nodes(config, nodes) + Finetuning().nodes(config, nodes)
    keys = compute_keys(nodes)
    with mlflow_state_kept():
        summary = run_nodes(config, nodes)

    not_run = "not run: upstream stage pretrain failed"
    assert summary.failed == {"pretrain": "RuntimeError: out of stand-in memory", "score": not_run,
                              **{f"finetune/d/seed-{seed}": not_run for seed in SEEDS}}
    assert list(summary.results) == ["tokenize/continued"]
    # its state file keeps the error for `bioray status`; the chained one (started in Ray) keeps nothing
    assert stage_state.read(config.paths, "pretrain", keys["pretrain"])["error"] == summary.failed["pretrain"]
    assert stage_state.read(config.paths, "score", keys["score"]) is None
    client = MlflowClient(config.tracking.uri)
    assert client.get_run(summary.parent_run_id).info.status == "FAILED"
    experiment = client.get_experiment_by_name(config.tracking.experiment).experiment_id
    children = {run.data.tags["bioray.stage"]: run for run in client.search_runs(
        [experiment], f"tags.`mlflow.parentRunId` = '{summary.parent_run_id}'")}
    assert {name: run.info.status for name, run in children.items()} == {
        **{name: "FAILED" for name in summary.failed}, "tokenize/continued": "FINISHED"}
    assert children["score"].data.tags["bioray.error"] == not_run

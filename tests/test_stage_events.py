"""The runner's listeners follow its stage events, without Ray: the state files (bioray.pipeline.stage_state),
the terminal lines (bioray.pipeline.terminal) and the MLflow runs (bioray.pipeline.stage_runs)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from mlflow.tracking import MlflowClient

from bioray.pipeline.events import Heartbeat, StageFailed, StageFinished, StageQueued, StageStarted
from bioray.pipeline.execute import StageResult
from bioray.pipeline.stage_state import StateFiles, mark_failed, read
from bioray.pipeline.stages.base import Node, NoParams
from bioray.pipeline.terminal import StageLines
from bioray.workdir import Workdir

STAGE = SimpleNamespace(headline_for=lambda node: (), Params=NoParams)


def test_a_failed_stage_reaches_the_state_files_and_the_terminal(tmp_path, caplog):
    paths = Workdir(tmp_path)
    train, score, report = Node("train", STAGE), Node("score", STAGE, {"model": "train"}), \
        Node("report", STAGE, {"model": "train"})
    listeners = (StateFiles(paths), StageLines([train, score, report]))
    progress = paths.stage_progress("train", "k1")
    progress.parent.mkdir(parents=True)
    mark_failed(paths, "score", "k2", "an earlier run's error")
    events = [StageStarted(train, "k1", progress), StageStarted(report, "k3", None)]
    with caplog.at_level(logging.INFO, logger="bioray.progress"):
        for event in events:
            for listener in listeners:
                listener(event)
        assert read(paths, "train", "k1")["status"] == read(paths, "report", "k3")["status"] == "running"
        progress.write_text("step 1/9\n")
        for listener in listeners:
            listener(Heartbeat())
        with open(progress, "a") as sink:
            sink.write("step 2/9\n")
        for event in (StageFailed(train, "k1", "OSError: disk full\ntraceback", True),
                      StageFailed(score, "k2", "not run: upstream stage train failed", False, "train"),
                      StageFailed(report, "k3", "not run: upstream stage train failed", True, "train")):
            for listener in listeners:
                listener(event)
    assert read(paths, "train", "k1") | {"since": 0} == {"status": "failed", "error": "OSError: disk full", "since": 0}
    assert read(paths, "score", "k2")["error"] == "an earlier run's error"  # never started: left as it was
    assert read(paths, "report", "k3") is None  # started, then its upstream failed: nothing to report
    assert [r.getMessage() for r in caplog.records] == [  # its last progress line too; no `started` for report
        "[1/3] train started", "[1/3] train | step 1/9", "[1/3] train | step 2/9"]


def test_the_mlflow_runs_follow_the_events(write_workflow, quickstart_tree):
    from bioray.pipeline.inputs import load_checked
    from bioray.pipeline.plan import build_plan, compute_keys
    from bioray.pipeline.stage_runs import StageRuns

    config = load_checked(write_workflow(quickstart_tree))
    nodes = build_plan(config)
    keys = compute_keys(nodes)
    runs = StageRuns(config, keys, None, "wf.yaml")
    ingest, vocab, tokenize = nodes[:3]
    for node in (ingest, vocab, tokenize):
        runs(StageQueued(node, keys[node.name]))
    output = config.paths.stage_dir(ingest.name, keys[ingest.name])
    output.mkdir(parents=True)
    (output / "stats.json").write_text("{}")
    runs(StageFinished(ingest, keys[ingest.name], StageResult(ingest.name, keys[ingest.name], str(output),
                                                              {"ingest/documents": 3})))
    runs(StageFailed(vocab, keys[vocab.name], "ValueError: no text", True))
    runs.end(1.5)
    client = MlflowClient(runs.context.tracking_uri)
    child = {name: client.get_run(run_id) for name, run_id in runs.children.items()}
    assert child[ingest.name].info.status == "FINISHED" and child[ingest.name].data.metrics["ingest/documents"] == 3
    assert [a.path for a in client.list_artifacts(runs.children[ingest.name])] == ["stats.json"]
    assert child[vocab.name].info.status == "FAILED" and child[vocab.name].data.tags["bioray.error"] == \
        "ValueError: no text"
    assert child[tokenize.name].info.status == "KILLED"  # still to run when the driver stopped
    parent = client.get_run(runs.parent_id)
    assert parent.info.status == "FAILED" and parent.data.metrics["pipeline/stages_run"] == 3

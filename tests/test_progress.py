"""Progress lines from a stage's worker to the driver's terminal (bioray.progress): the driver reads
each complete line once, never half a line, and a worker that cannot write its file keeps training."""

from __future__ import annotations

import logging

from bioray import progress


def test_the_driver_reads_each_complete_line_once(tmp_path):
    path = tmp_path / ".progress-abc.log"
    tail = progress.Tail(path)
    assert tail.new_lines() == []  # the stage has not written yet
    progress.use(path)
    try:
        progress.report(logging.getLogger("test"), "step %d/%d loss %.2f", 20, 300, 6.5)
        with open(path, "a") as sink:
            sink.write("step 40/300 lo")  # the worker is half-way through a line
        assert tail.new_lines() == ["step 20/300 loss 6.50"]
        assert tail.new_lines() == []
        with open(path, "a") as sink:
            sink.write("ss 6.1\n")
        progress.report(logging.getLogger("test"), "done")
        assert tail.new_lines() == ["step 40/300 loss 6.1", "done"]
    finally:
        progress.use(None)


def test_a_worker_that_cannot_write_its_progress_keeps_going(tmp_path):
    progress.use(tmp_path / "not-here" / "progress.log")  # another node, which does not see the workdir
    try:
        progress.report(logging.getLogger("test"), "step %d", 1)
    finally:
        progress.use(None)
    assert not (tmp_path / "not-here").exists()


def test_a_stage_chained_to_running_ones_is_announced_when_its_inputs_are_done(caplog):
    from types import SimpleNamespace

    from bioray.pipeline.events import StageFinished, StageStarted
    from bioray.pipeline.stages.base import Node, NoParams
    from bioray.pipeline.terminal import StageLines

    stage = SimpleNamespace(headline_for=lambda node: (), Params=NoParams)
    train, score = Node("train", stage), Node("score", stage, {"model": "train"})
    report = Node("report", stage, {"scores": "score"})
    lines = StageLines([train, score, report])
    result = SimpleNamespace(metrics={"stage/seconds": 1.0})
    with caplog.at_level(logging.INFO, logger="bioray.progress"):
        lines(StageStarted(train, "k", None))
        lines(StageStarted(score, "k", None))  # Ray queues it behind train's ObjectRef
        lines(StageStarted(report, "k", None))
        lines(StageFinished(train, "k", result))
        lines(StageFinished(score, "k", result))
    assert [r.getMessage() for r in caplog.records] == [
        "[1/3] train started", "[1/3] train done in 1.0s", "[2/3] score started", "[2/3] score done in 1.0s",
        "[3/3] report started"]

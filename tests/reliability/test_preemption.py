"""Fault: preemption. SIGTERM to `bioray run` between two scheduled checkpoints: the pretraining
checkpoints the step it is at, the driver exits 75, and `bioray run` again resumes from that step on
the loss curve of an uninterrupted run (0 optimizer steps lost). A second extended test drives the same
worker path in process (the driver's stop flag set, the workers checkpoint and stop, the rerun
resumes); the default tier has the driver's signal handler."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bioray.train.preemption import EXIT_CODE, Preempted, clear_stop, request_stop
from tests.integration.test_pretrain_ray import _config, _history, _pretrain, corpus_parts
from tests.reliability.test_worker_killed import _logged_steps, _registered_checkpoints
from tests.support.cli import run_bioray, start_bioray
from tests.support.workflows import PRETRAIN, copy_stages, small_workflow, write_workflow


@pytest.mark.extended  # two pretrainings (90-110 s); the default tier keeps the signal handler's test
def test_stop_flag_checkpoints_the_current_step_and_the_rerun_goes_on_from_it(corpus_template, ray_session,
                                                                              tmp_path):
    """Two workers, checkpoint_every far away: the flag is up before the first step, so both ranks
    agree to checkpoint step 1 and stop; the run under the same name resumes at step 2."""
    parts, steps = corpus_parts(corpus_template), 4
    config = _config(steps=steps, checkpoint_every=1000, long_phase_fraction=0.0, long_micro_batch_size=None)
    request_stop()
    try:
        with pytest.raises(Preempted, match=f"checkpoint of step 1 of {steps}"):
            _pretrain(parts, tmp_path, "stopped", config)
    finally:
        clear_stop()
    registered = _registered_checkpoints(tmp_path / "storage" / "stopped")
    assert [c["metrics"]["step"] for c in registered] == [1]
    assert not (tmp_path / "stopped" / "model").exists()  # no export: the stage is not finished

    shutil.rmtree(tmp_path / "stopped")  # as the runner drops an uncommitted stage's output; same Ray Train run
    result, client, run_id = _pretrain(parts, tmp_path, "stopped", config)
    history = _history(tmp_path, "stopped")
    assert sorted(history) == list(range(1, steps + 1))  # every step once
    assert [row["attempt"] for row in history.values()] == [0] + [1] * (steps - 1)
    assert result["pretrain/steps"] == steps


STEPS = 24  # one checkpoint at the end only: the SIGTERM always comes mid-interval
CORPUS = ("ingest", "vocab", "tokenize")


def _workflow(tmp_path: Path, data_root: Path, template: Path, name: str) -> tuple[Path, Path]:
    work = tmp_path / name
    copy_stages(template, work, CORPUS)
    pretrain = {**PRETRAIN, "num_workers": 2, "steps": STEPS, "global_batch_size": 16, "log_every": 1,
                "checkpoint_every": 1000, "preemption_grace_s": 120}
    tree = small_workflow(work, data_root, name="preempt", pretrain=pretrain,
                          tracking={"uri": None, "experiment": "preempt"})
    return write_workflow(tree, tmp_path / f"{name}.yaml"), work


def _losses(work: Path) -> dict[int, list[tuple[float, int]]]:
    """Every logged pretraining loss, by step: (value, MLflow run start) of each run that logged it."""
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("preempt")
    steps: dict[int, list] = {}
    for run in client.search_runs([experiment.experiment_id]) if experiment else []:
        if run.data.tags.get("bioray.stage") == "pretrain":
            for step, values in _logged_steps(client, run.info.run_id).items():
                steps.setdefault(step, []).extend(values)
    return steps


@pytest.mark.extended
@pytest.mark.timeout(1500)  # three pipeline runs (stopped, resumed, reference) on top of the corpus template
def test_sigterm_to_bioray_run_loses_no_optimizer_step(tmp_path, data_root, corpus_template):
    workflow, work = _workflow(tmp_path, data_root, corpus_template, "work")
    run = start_bioray("pretrain", str(workflow))
    try:
        deadline = time.time() + 900
        while max(_losses(work), default=0) < 4:  # mid-interval: the only scheduled checkpoint is the last step
            assert run.poll() is None, run.stdout.read()[-6000:]
            assert time.time() < deadline, "pretraining logged no 4th step in 15 minutes"
            time.sleep(0.5)
        signalled = time.time()
        run.send_signal(signal.SIGTERM)  # the driver only, as Kubernetes stops a container's main process
        output, _ = run.communicate(timeout=300)
        exited = time.time()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == EXIT_CODE, output[-6000:]
    line = output.strip().splitlines()[-1]
    assert line.startswith("bioray: preempted (SIGTERM); pretrain: checkpoint of step ") and "again resumes" in line
    storage = next((work / "ray_train").glob("pretrain-*"))
    registered = _registered_checkpoints(storage)
    assert len(registered) == 1
    stopped_at = registered[0]["metrics"]["step"]
    written = max(p.stat().st_mtime for p in (storage / registered[0]["checkpoint_dir_name"]).rglob("*"))
    logged_before = _losses(work)
    # 0 steps lost: the checkpoint holds the last step the stopped run trained (and logged)
    assert 4 <= stopped_at == max(logged_before) < STEPS
    assert f"checkpoint of step {stopped_at} of {STEPS}" in line
    assert not list(work.glob("stages/pretrain/*/result.json"))  # not committed
    print(f"SIGTERM -> checkpoint written {written - signalled:.1f} s, -> driver exit {exited - signalled:.1f} s; "
          f"stopped at step {stopped_at}, steps lost {max(logged_before) - stopped_at}")

    again = run_bioray("pretrain", str(workflow))
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    history = json.loads(next(work.glob("stages/pretrain/*/history.json")).read_text())
    assert [h["step"] for h in history] == list(range(1, STEPS + 1))  # no step missing, none repeated
    assert [h["attempt"] for h in history] == [0 if h["step"] <= stopped_at else 1 for h in history]

    reference_workflow, reference_work = _workflow(tmp_path, data_root, corpus_template, "reference")
    reference = run_bioray("pretrain", str(reference_workflow))
    assert reference.returncode == 0, reference.stdout[-4000:] + reference.stderr[-4000:]
    expected = json.loads(next(reference_work.glob("stages/pretrain/*/history.json")).read_text())
    assert [h["pretrain/loss"] for h in history] == pytest.approx([h["pretrain/loss"] for h in expected],
                                                                  rel=1e-4, abs=1e-5)


def test_sigterm_handler_is_only_installed_while_stages_run():
    """Outside the stages, SIGTERM keeps its handler (Ray's, or the default)."""
    from bioray.pipeline.preemption import DriverStop

    before = signal.getsignal(signal.SIGTERM)
    stop = DriverStop()
    assert signal.getsignal(signal.SIGTERM) is not before and not stop.requested
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(100):  # Python runs the handler between bytecodes of the main thread
        if stop.requested:
            break
        time.sleep(0.01)
    assert stop.requested
    stop.close()
    assert signal.getsignal(signal.SIGTERM) is before

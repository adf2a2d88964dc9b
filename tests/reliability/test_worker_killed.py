"""Fault: a Ray Train worker SIGKILLed mid-pretraining (DeepSpeed over gloo, real token shards). The run
restarts from its last checkpoint and recomputes the steps after it exactly as the killed attempt
computed them (same data order, masks and dropout): the killed attempt's logged losses are the
reference, so no second, undisturbed run is needed."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.integration.test_pretrain_ray import EVERY, LONG_FROM, STEPS, _config, _history, _pretrain, corpus_parts


def _registered_checkpoints(storage: Path) -> list[dict]:
    """Checkpoints Ray Train has registered (every worker reported), from its snapshot file."""
    snapshot = storage / "checkpoint_manager_snapshot.json"
    try:
        return json.loads(snapshot.read_text())["checkpoint_results"] if snapshot.is_file() else []
    except ValueError:  # being rewritten
        return []


def _train_workers() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if any("RayTrainWorker" in part for part in p.info["cmdline"] or [])]


def _logged_steps(client, run_id: str) -> dict[int, list[float]]:
    steps: dict[int, list[float]] = {}
    for metric in client.get_metric_history(run_id, "pretrain/loss"):
        steps.setdefault(metric.step, []).append(metric.value)
    return steps


@pytest.mark.extended
def test_killed_worker_resumes_from_checkpoint_on_the_same_loss_curve(corpus_template, ray_session, tmp_path):
    parts = corpus_parts(corpus_template)
    storage = tmp_path / "storage" / "killed"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killed: list[dict] = []

    def kill_past_a_checkpoint():
        """Freeze the workers; once a checkpoint is registered and a later step is in MLflow, kill one.
        Frozen, they can neither register another checkpoint nor log another step meanwhile, so the
        restart point and the killed attempt's steps past it are known exactly."""
        from mlflow.tracking import MlflowClient

        deadline = time.time() + 600
        while time.time() < deadline and not killed:
            time.sleep(0.5)
            workers = _train_workers()
            registered = _registered_checkpoints(storage)
            if len(workers) < 2 or not registered:
                continue
            for worker in workers:
                worker.send_signal(signal.SIGSTOP)
            time.sleep(2)  # a report already on its way to the controller gets registered
            restart = _registered_checkpoints(storage)[-1]["metrics"]["step"]
            client = MlflowClient(uri)
            run_id = client.search_runs([client.get_experiment_by_name("t").experiment_id])[0].info.run_id
            beyond = [s for s in _logged_steps(client, run_id) if s > restart]
            if beyond:
                workers[-1].kill()  # SIGKILL: no cleanup, like a lost node
                killed.append({"restart": restart, "logged": beyond})
            for worker in workers:
                if worker.is_running():
                    worker.send_signal(signal.SIGCONT)

    killer = threading.Thread(target=kill_past_a_checkpoint, daemon=True)
    killer.start()
    result, client, run_id = _pretrain(parts, tmp_path, "killed", _config())
    killer.join(timeout=5)
    assert killed, "no training worker was killed: the test proves nothing"
    restart, recomputed = killed[0]["restart"], killed[0]["logged"]

    history = _history(tmp_path, "killed")
    assert sorted(history) == list(range(1, STEPS + 1))  # every step once in the run's history
    assert [row["attempt"] for row in history.values()] == [0] * restart + [1] * (STEPS - restart)
    assert restart < LONG_FROM  # the resumed attempt trains through the phase switch ...
    # ... from 64-token sequences to 128 (micro-batch 4, twice the accumulation, same global batch)
    assert [history[s]["pretrain/seq_len"] for s in (1, LONG_FROM - 1, LONG_FROM, STEPS)] == [64, 64, 128, 128]
    # the steps the killed attempt had logged past the checkpoint were computed again, identically
    logged = _logged_steps(client, run_id)
    assert all(len(logged[step]) == 2 for step in recomputed)
    for step, values in logged.items():  # (a step the killed attempt logged later arrived too: also equal)
        assert values == pytest.approx([values[0]] * len(values), rel=1e-4, abs=1e-5), step
        assert len(values) == 1 or step > restart

    # every checkpoint tracked in MLflow with its storage URI and size; only the last 2 kept
    records = [a.path for a in client.list_artifacts(run_id, "checkpoints")]
    assert f"checkpoints/step-{STEPS:08d}.json" in records and len(records) >= STEPS // EVERY
    record = json.loads(Path(client.download_artifacts(run_id, f"checkpoints/step-{STEPS:08d}.json",
                                                      str(tmp_path))).read_text())
    assert record["size_bytes"] > 100_000 and Path(record["uri"]).is_dir() and record["metrics"]["step"] == STEPS
    kept = _registered_checkpoints(storage)
    assert [c["metrics"]["step"] for c in kept] == [STEPS - EVERY, STEPS]  # the last 2
    assert all((storage / c["checkpoint_dir_name"]).is_dir() for c in kept)
    assert result["pretrain/steps"] == STEPS

    # the export loads with transformers and fills a [MASK]
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(tmp_path / "killed" / "model"))
    predictions = fill("Patients with chronic kidney [MASK] were enrolled.")
    assert len(predictions) == 5 and all(0 <= p["score"] <= 1 for p in predictions)

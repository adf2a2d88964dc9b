"""`bioray pretrain` with Ray Train storage and MLflow's artifacts on one S3 API server (moto's, a
separate process on loopback, over HTTP): checkpoints land in the bucket, a worker SIGKILLed past a
checkpoint resumes from it (read back from S3) on the same loss curve, the stage's recorded
checkpoint URI loads into the weights the stage exported, and the keys, given only in the
environment, are written nowhere: not in the MLflow store, the bucket, Ray's session logs or the workdir."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from mlflow.tracking import MlflowClient

from bioray.storage import s3_filesystem
from tests.reliability.test_worker_killed import _logged_steps
from tests.support.cli import start_bioray
from tests.support.servers import leaks, start_mlflow_server
from tests.support.workflows import TINY_MODEL, small_workflow, write_workflow

STEPS, EVERY = 24, 8
PRETRAIN = {"model": TINY_MODEL, "num_workers": 2, "steps": STEPS, "global_batch_size": 32, "micro_batch_size": 8,
            "lr": 1e-3, "warmup_steps": 4, "log_every": 1, "checkpoint_every": EVERY, "keep_checkpoints": 2,
            "max_failures": 2, "shuffle_buffer": 64, "long_phase_fraction": 0.25, "long_micro_batch_size": 4}


@pytest.fixture
def ray_temp():
    """The CLI's local Ray keeps its session logs here (short: Ray's socket paths have a length limit)."""
    directory = Path(tempfile.mkdtemp(prefix="rs3-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _snapshot(s3, bucket: str) -> list[dict]:
    """The checkpoints Ray Train has registered, from its snapshot file in the bucket."""
    found = [k for k in s3.objects(bucket, "ray-train/") if k.endswith("checkpoint_manager_snapshot.json")]
    try:
        return json.loads(s3.objects(bucket, found[0])[found[0]])["checkpoint_results"] if found else []
    except (ValueError, KeyError):  # being rewritten
        return []


def _stage_run(client: MlflowClient, stage: str):
    experiment = client.get_experiment_by_name("s3")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return next((r for r in runs if r.data.tags.get("bioray.stage") == stage), None)


@pytest.mark.extended
@pytest.mark.timeout(1800)
def test_pretraining_on_s3_resumes_after_a_worker_kill_and_leaks_no_key(s3_server, data_root, tmp_path, ray_temp,
                                                                         monkeypatch):
    s3, keys = s3_server, s3_server.keys
    bucket = s3.bucket("bioray")
    (tmp_path / "mlflow").mkdir()
    # one uvicorn process: on a loaded machine a supervisor's health check kills slow-starting workers
    server = start_mlflow_server(tmp_path / "mlflow", ["--workers", "1"], artifacts=f"s3://{bucket}/mlflow",
                                 extra_env={**keys, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint}, timeout=300)
    try:
        work = tmp_path / "work"
        workflow = write_workflow(small_workflow(work, data_root, name="s3", pretrain=PRETRAIN,
                                                 tracking={"uri": server.uri, "experiment": "s3"},
                                                 storage_path=f"s3://{bucket}/ray-train",
                                                 storage_endpoint=s3.endpoint), tmp_path / "s3.yaml")
        assert not any(key in workflow.read_text() for key in keys.values())  # the keys: environment only
        client = MlflowClient(server.uri)
        driver = start_bioray("pretrain", str(workflow), env={**keys, "RAY_TMPDIR": str(ray_temp)})
        killed: list[dict] = []

        def kill_past_a_checkpoint():
            """As tests/reliability/test_worker_killed.py, with the checkpoints registered in S3; only
            this driver's workers (other tests may be training beside it)."""
            deadline = time.time() + 1200
            while time.time() < deadline and not killed and driver.poll() is None:
                time.sleep(1)
                workers = [p for p in psutil.Process(driver.pid).children(recursive=True)
                           if "RayTrainWorker" in " ".join(_cmdline(p))]
                if len(workers) < 2 or not _snapshot(s3, bucket):
                    continue
                for worker in workers:
                    worker.send_signal(signal.SIGSTOP)
                time.sleep(2)
                restart = _snapshot(s3, bucket)[-1]["metrics"]["step"]
                run = _stage_run(client, "pretrain")
                beyond = [s for s in _logged_steps(client, run.info.run_id) if s > restart] if run else []
                if beyond:
                    workers[-1].kill()
                    killed.append({"restart": restart, "logged": beyond})
                for worker in workers:
                    if worker.is_running():
                        worker.send_signal(signal.SIGCONT)

        killer = threading.Thread(target=kill_past_a_checkpoint, daemon=True)
        killer.start()
        output, _ = driver.communicate(timeout=1500)
        killer.join(timeout=5)
        assert driver.returncode == 0, output[-4000:]
        assert killed, "no training worker was killed: the test proves nothing"
        restart, recomputed = killed[0]["restart"], killed[0]["logged"]

        # the run resumed from the S3 checkpoint: every step once, the steps after it by attempt 1 ...
        stage = next((work / "stages" / "pretrain").glob("[0-9a-f]*"))
        history = {row["step"]: row for row in json.loads((stage / "history.json").read_text())}
        assert sorted(history) == list(range(1, STEPS + 1))
        assert [row["attempt"] for row in history.values()] == [0] * restart + [1] * (STEPS - restart)
        # ... and computed the killed attempt's steps past it again, identically
        run_id = _stage_run(client, "pretrain").info.run_id
        logged = _logged_steps(client, run_id)
        assert all(len(logged[step]) == 2 for step in recomputed)
        for step, values in logged.items():
            assert values == pytest.approx([values[0]] * len(values), rel=1e-4, abs=1e-5), step

        # the checkpoints are in the bucket: the last 2 kept
        kept = _snapshot(s3, bucket)
        assert [c["metrics"]["step"] for c in kept] == [STEPS - EVERY, STEPS]
        files = s3.objects(bucket, "ray-train/")
        for checkpoint in kept:
            assert any(f"/{checkpoint['checkpoint_dir_name']}/state/" in k for k in files)

        # the stage's recorded checkpoint is an s3:// URI; read back from S3 it holds the exported weights
        uri = json.loads((stage / "result.json").read_text())["metrics"]["checkpoint_path"]
        assert uri.startswith(f"s3://{bucket}/ray-train/") and uri.endswith(kept[-1]["checkpoint_dir_name"])
        for name, value in keys.items():
            monkeypatch.setenv(name, value)
        from ray.train import Checkpoint
        from safetensors.torch import load_file

        with Checkpoint(uri.removeprefix("s3://"), filesystem=s3_filesystem(s3.endpoint)).as_directory() as local:
            states = torch.load(Path(local) / "state" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
        exported = load_file(str(stage / "model" / "model.safetensors"))
        assert exported and set(exported) <= set(states)
        assert all(torch.equal(states[name].to(tensor.dtype), tensor) for name, tensor in exported.items())

        # MLflow's artifacts of the stage are in the same bucket (through the tracking server)
        artifacts = s3.objects(bucket, "mlflow/")
        assert any(k.endswith(f"/artifacts/checkpoints/step-{STEPS:08d}.json") for k in artifacts), sorted(artifacts)
        record = next(v for k, v in artifacts.items() if k.endswith(f"checkpoints/step-{STEPS:08d}.json"))
        assert json.loads(record)["uri"].startswith(f"s3://{bucket}/ray-train/")

        # no key anywhere: the tracking server's store, the workdir, Ray's session logs, every object
        assert leaks([tmp_path / "mlflow", work, ray_temp], list(keys.values())) == []
        everything = s3.objects(bucket)
        assert [k for k, v in everything.items() if any(key.encode() in v for key in keys.values())] == []
        assert not any(key in output for key in keys.values())
    finally:
        server.stop()


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []

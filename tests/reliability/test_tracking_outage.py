"""The MLflow server goes away during training: tracking writes neither block nor fail; they arrive
when the server is back, or are kept locally, reported, and replayed later."""

from __future__ import annotations

import time

import pytest
from mlflow.tracking import MlflowClient

from bioray.tracking import TrackingOutbox, replay_spilled
from tests.integration.conftest import _free_port, _start_mlflow_server, _stop


@pytest.fixture(autouse=True)
def quick_http_retries(monkeypatch):
    """MLflow's client retries a failed request for minutes by default; the outbox retries itself."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def _new_run(uri: str) -> tuple[MlflowClient, str]:
    client = MlflowClient(uri)
    experiment = client.create_experiment(f"outage-{time.time_ns()}")
    return client, client.create_run(experiment).info.run_id


def _steps(client: MlflowClient, run_id: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, "loss")]


def test_metrics_logged_while_the_server_is_down_arrive_when_it_is_back(tmp_path):
    port = _free_port()
    server, uri = _start_mlflow_server(tmp_path, port=port)
    client, run_id = _new_run(uri)
    outbox = TrackingOutbox(client, run_id, spill_to=tmp_path / "unsent.jsonl", retry_s=0.5)
    outbox.metrics({"loss": 3.0}, 1)
    deadline = time.time() + 30
    while _steps(client, run_id) != [1] and time.time() < deadline:
        time.sleep(0.2)
    _stop(server)
    started = time.perf_counter()
    for step in range(2, 7):  # training goes on: each call returns at once
        outbox.metrics({"loss": 3.0 - 0.1 * step}, step)
    assert time.perf_counter() - started < 0.5
    time.sleep(3)  # the outbox is failing and retrying now
    server, _ = _start_mlflow_server(tmp_path, port=port)
    try:
        assert outbox.close(timeout_s=120) == 0
        assert _steps(client, run_id) == [1, 2, 3, 4, 5, 6]
        assert not (tmp_path / "unsent.jsonl").exists()
    finally:
        _stop(server)


def test_writes_the_server_never_got_are_kept_reported_and_replayed(tmp_path):
    port = _free_port()
    server, uri = _start_mlflow_server(tmp_path, port=port)
    client, run_id = _new_run(uri)
    _stop(server)
    outbox = TrackingOutbox(client, run_id, spill_to=tmp_path / "unsent.jsonl", retry_s=0.5)
    for step in range(1, 4):
        outbox.metrics({"loss": 1.0 / step}, step)
    outbox.record({"step": 3, "uri": "/ckpt/3"}, "checkpoints/step-00000003.json")
    assert outbox.close(timeout_s=3) == 4  # the gap, reported
    assert len((tmp_path / "unsent.jsonl").read_text().splitlines()) == 4
    server, _ = _start_mlflow_server(tmp_path, port=port)
    try:
        assert replay_spilled(client, tmp_path / "unsent.jsonl") == 4
        assert _steps(client, run_id) == [1, 2, 3]
        assert {a.path for a in client.list_artifacts(run_id, "checkpoints")} == {"checkpoints/step-00000003.json"}
    finally:
        _stop(server)

"""The MLflow server becomes unreachable during training: tracking writes neither block nor fail; they
arrive when the server is back, or are kept locally, reported, and replayed later. The outage is a
loopback TCP forwarder cutting every connection; the real server behind it keeps running."""

from __future__ import annotations

import time

import pytest
from mlflow.tracking import MlflowClient

from bioray.tracking.outbox import TrackingOutbox, record_item, replay_spilled, send_or_spill
from tests.support.servers import TcpForwarder


@pytest.fixture(autouse=True)
def quick_http_retries(monkeypatch):
    """MLflow's client retries a failed request for minutes by default; the outbox retries itself."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


@pytest.fixture
def forwarded(mlflow_server):
    """(forwarder, a client that talks through it, a client that talks to the server directly, a new run)."""
    forwarder = TcpForwarder(int(mlflow_server.rsplit(":", 1)[1]))
    direct = MlflowClient(mlflow_server)
    run_id = direct.create_run(direct.create_experiment(f"outage-{time.time_ns()}")).info.run_id
    yield forwarder, MlflowClient(forwarder.uri), direct, run_id
    forwarder.close()


def _steps(client: MlflowClient, run_id: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, "loss")]


def test_metrics_logged_while_the_server_is_down_arrive_when_it_is_back(forwarded, tmp_path):
    forwarder, client, direct, run_id = forwarded
    outbox = TrackingOutbox(client, run_id, spill_to=tmp_path / "unsent.jsonl", retry_s=0.5)
    outbox.metrics({"loss": 3.0}, 1)
    deadline = time.time() + 30
    while _steps(direct, run_id) != [1] and time.time() < deadline:
        time.sleep(0.2)
    assert _steps(direct, run_id) == [1]
    forwarder.down()
    for step in range(2, 7):  # training goes on: each call only queues
        outbox.metrics({"loss": 3.0 - 0.1 * step}, step)
    deadline = time.time() + 30
    while outbox.failing_since is None and time.time() < deadline:  # the outbox has met the outage
        time.sleep(0.1)
    assert outbox.failing_since is not None
    assert _steps(direct, run_id) == [1]  # nothing got through while it was down
    forwarder.up()
    assert outbox.close(timeout_s=120) == 0
    assert _steps(direct, run_id) == [1, 2, 3, 4, 5, 6]  # all of it, in order
    assert not (tmp_path / "unsent.jsonl").exists()


def test_writes_the_server_never_got_are_kept_reported_and_replayed(forwarded, tmp_path):
    forwarder, client, direct, run_id = forwarded
    forwarder.down()
    outbox = TrackingOutbox(client, run_id, spill_to=tmp_path / "unsent.jsonl", retry_s=0.5)
    for step in range(1, 4):
        outbox.metrics({"loss": 1.0 / step}, step)
    assert outbox.close(timeout_s=3) == 3  # the gap, reported
    # a checkpoint's record, as pretraining spills it when the server is away
    record = record_item({"step": 3, "uri": "/ckpt/3"}, "checkpoints/step-00000003.json")
    assert not send_or_spill(client, run_id, [record], tmp_path / "unsent.jsonl", within_s=1)
    assert len((tmp_path / "unsent.jsonl").read_text().splitlines()) == 4
    assert _steps(direct, run_id) == []
    forwarder.up()
    assert replay_spilled(client, tmp_path / "unsent.jsonl") == 4
    assert _steps(direct, run_id) == [1, 2, 3]
    assert {a.path for a in direct.list_artifacts(run_id, "checkpoints")} == {"checkpoints/step-00000003.json"}
    assert not (tmp_path / "unsent.jsonl").exists()

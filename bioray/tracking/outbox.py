"""Tracking writes that never block or fail training: a background outbox with retries, a local
spill file for what could not be sent, and the worker-side logger built on it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)


class TrackingOutbox:
    """MLflow writes of a long-running process, sent in order by a background thread.

    While the tracking server is unreachable the writes wait and are retried, so training and
    checkpointing never block or fail because tracking is down; they arrive when it is back.
    close() waits for the queue to drain (up to a timeout) and writes what still could not be sent
    to a local JSON Lines file (`spill_to`), which the pipeline driver replays (`replay_spilled`).
    """

    def __init__(self, client: MlflowClient, run_id: str, spill_to: Path | None = None, retry_s: float = 5.0):
        import collections
        import threading

        self.client, self.run_id, self.spill_to, self.retry_s = client, run_id, spill_to, retry_s
        self.queue: collections.deque = collections.deque()
        self.ready = threading.Condition()
        self.closing = self.stopped = False
        self.failing_since: float | None = None
        self.thread = threading.Thread(target=self._send_all, name="bioray-tracking-outbox", daemon=True)
        self.thread.start()

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        """Queue numeric metrics with the time they were measured; returns at once."""
        self._put(metrics_item(metrics, step))

    def close(self, timeout_s: float = 120.0) -> int:
        """Send what is queued; returns how many writes could not be sent (spilled to the local file)."""
        with self.ready:
            self.closing = True
            self.ready.notify_all()
        self.thread.join(timeout_s)
        with self.ready:
            self.stopped = True  # a write in flight now may still arrive: then it is in MLflow and the spill
            left = list(self.queue)
            self.queue.clear()
        if left and self.spill_to is not None:
            spill(self.spill_to, self.run_id, left)
        if left:
            log.warning("MLflow unreachable: %d tracking write(s) for run %s kept in %s", len(left), self.run_id,
                        self.spill_to)
        return len(left)

    def _put(self, item: dict) -> None:
        with self.ready:
            self.queue.append(item)
            self.ready.notify_all()

    def _send_all(self) -> None:
        while True:
            with self.ready:
                while not self.queue and not self.closing:
                    self.ready.wait()
                if not self.queue or self.stopped:
                    return  # all sent, or close() gave up and spilled the rest
                item = self.queue[0]
            try:
                send(self.client, self.run_id, item)
            except Exception as exc:  # server down or unreachable: keep the write, try again
                if self.failing_since is None:
                    self.failing_since = time.time()
                    log.warning("MLflow unreachable (%s: %s); tracking writes wait and are retried",
                                type(exc).__name__, str(exc)[:200])
                with self.ready:
                    self.ready.wait(self.retry_s)
                continue
            if self.failing_since is not None:
                log.warning("MLflow reachable again after %.0fs", time.time() - self.failing_since)
                self.failing_since = None
            with self.ready:
                if self.queue and self.queue[0] is item:
                    self.queue.popleft()


SPILL_FILE = "unsent_tracking.jsonl"  # in a stage's output: writes its workers could not send


def send(client: MlflowClient, run_id: str, item: dict) -> None:
    """One tracking write, queued or spilled: a step's metrics (metrics_item) or a record (record_item)."""
    if item["kind"] == "metrics":
        entries = [Metric(k, v, item["timestamp"], item["step"]) for k, v in item["metrics"].items()]
        for i in range(0, len(entries), 1000):
            client.log_batch(run_id, metrics=entries[i:i + 1000])
    else:
        client.log_dict(run_id, item["data"], item["artifact_file"])


def record_item(data: dict, artifact_file: str) -> dict:
    """A JSON record logged as an artifact (a checkpoint's step, URI and size), as it is sent and spilled."""
    return {"kind": "dict", "data": data, "artifact_file": artifact_file}


def metrics_item(metrics: dict[str, float], step: int) -> dict:
    """A metrics write as TrackingOutbox queues and spills it, stamped with the time it was measured."""
    return {"kind": "metrics", "step": step, "timestamp": int(time.time() * 1000),
            "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}}


def spill(path: Path, run_id: str, items: list[dict]) -> None:
    """Append writes that could not be sent to a local JSON Lines file (replay_spilled sends them)."""
    with open(path, "a") as stream:
        for item in items:
            stream.write(json.dumps({**item, "run_id": run_id}) + "\n")


def send_or_spill(client: MlflowClient | Callable[[], MlflowClient], run_id: str, items: list[dict], spill_to: Path,
                  within_s: float = 10.0) -> bool:
    """Send the writes in order if the server takes them within `within_s`; otherwise spill them (the
    driver replays the file) and return False. The caller never waits longer than that, whatever
    MLflow's own request retries do; a write still in flight may also arrive later (artifacts are
    overwritten with the same content, a metric point may then appear twice). `client` may be a
    function that makes one: made on the sending thread, so a store that cannot even open (a locked
    SQLite file) spills too."""
    import threading

    sent: list[int] = []

    def deliver():
        nonlocal client
        client = client() if callable(client) else client
        for item in items:
            send(client, run_id, item)
            sent.append(1)

    worker = threading.Thread(target=deliver, name="bioray-send", daemon=True)
    worker.start()
    worker.join(within_s)
    if len(sent) == len(items):
        return True
    spill(spill_to, run_id, items[len(sent):])
    return False


def replay_spilled(client: MlflowClient, path: Path) -> int:
    """Send the writes a worker could not send (its TrackingOutbox spill file); returns how many."""
    items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for item in items:
        send(client, item["run_id"], item)
    path.unlink()
    return len(items)


class WorkerLogger:
    """Logs metrics from a Ray worker (any node) to a stage's run through a TrackingOutbox (tracking
    outages never stop training), and samples the node's system metrics (CPU, memory, disk,
    network, GPU) into the same run."""

    def __init__(self, context, spill_to: Path | None = None, system_metrics_every_s: float = 10.0):
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self.outbox = TrackingOutbox(context.client, context.run_id, spill_to)
        self.monitor = SystemMetricsMonitor(context.run_id, sampling_interval=system_metrics_every_s,
                                            tracking_uri=context.tracking_uri, resume_logging=True)
        self.monitor.start()

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.outbox.metrics(metrics, step)

    def close(self) -> int:
        try:
            self.monitor.finish()
        except Exception as exc:  # its last sample could not be sent: not worth failing the run
            log.warning("system metrics: %s", exc)
        return self.outbox.close()

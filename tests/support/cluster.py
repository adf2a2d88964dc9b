"""A real two-node Ray cluster on this machine, started with `ray start` (token authentication on)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import ServerError, free_port


@dataclass
class RayCluster:
    dashboard: str  # Jobs API / dashboard address, http://127.0.0.1:PORT
    env: dict  # what a client needs: RAY_AUTH_MODE and the token's path
    token: str = field(repr=False)
    temp_dir: Path  # the session's logs
    address: str = ""  # the GCS, for a driver's ray.init(address=...)
    worker_node_pid: int = 0  # the second node's `ray start --block` (its own process group)

    def lose_worker_node(self) -> None:
        """SIGKILL every process of the second node at once: a node lost for good, no cleanup."""
        import psutil

        node = psutil.Process(self.worker_node_pid)
        for process in [node, *node.children(recursive=True)]:  # raylet, its workers, whatever left the group
            with suppress(psutil.NoSuchProcess):
                process.kill()

    def get(self, path: str):
        """GET a dashboard endpoint (JSON), authenticated with the cluster token."""
        request = urllib.request.Request(f"{self.dashboard}{path}", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def node_ids(self) -> set[str]:
        nodes = self.get("/api/v0/nodes?limit=100")["data"]["result"]["result"]
        return {n["node_id"] for n in nodes if n["state"] == "ALIVE"}


@contextmanager
def two_node_ray_cluster(node_env: dict, head_cpus: int = 2, worker_cpus: int = 2):
    """A real two-node Ray cluster on this machine: `ray start --head` and a second `ray start --address`
    with its own CPUs, token authentication on, both nodes with `node_env` in their environment (what a
    Kubernetes Secret gives pods). Stopped, every process of it, on exit."""
    base = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    token = secrets.token_hex(32)
    (base / "token").write_text(token)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(base / "token")}
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # this venv's python and bioray
    env = {**os.environ, **node_env, **auth, "RAY_ADDRESS": "", "PATH": path}
    gcs_port, dashboard_port = free_port(), free_port()
    common = ["--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats", "--object-store-memory=500000000"]
    ray = str(Path(sys.executable).with_name("ray"))
    processes = [subprocess.Popen(
        [ray, "start", "--head", f"--port={gcs_port}", f"--num-cpus={head_cpus}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard_port}", f"--temp-dir={base / 'ray'}", *common],
        env=env, stdout=open(base / "head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)]
    cluster = RayCluster(f"http://127.0.0.1:{dashboard_port}", auth, token, base / "ray", f"127.0.0.1:{gcs_port}")
    try:
        _wait(lambda: cluster.node_ids(), "the head node", base / "head.log")
        processes.append(subprocess.Popen(
            [ray, "start", f"--address=127.0.0.1:{gcs_port}", f"--num-cpus={worker_cpus}", *common],
            env=env, stdout=open(base / "worker.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
        cluster.worker_node_pid = processes[-1].pid
        _wait(lambda: len(cluster.node_ids()) == 2, "the second node", base / "worker.log")
        yield cluster
    finally:
        for process in reversed(processes):  # `ray start --block` stops its node's processes on SIGTERM
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def _wait(ready, what: str, log: Path, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if ready():
                return
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(2)
    raise ServerError(f"Ray cluster: {what} did not come up in {seconds:.0f}s: {log.read_text()[-3000:]}")

"""Real servers for integration tests: `mlflow server` on loopback (plain and with basic auth), and a
two-node Ray cluster started with `ray start`."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_mlflow_server(root, extra_args: list[str] = (), extra_env: dict | None = None, port: int | None = None):
    """`mlflow server` on loopback with a SQLite backend and served artifacts; returns (process, URI)."""
    port = port or _free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts"), "--workers", "2", *extra_args]
    log = open(root / "server.log", "a")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "MLFLOW_TRACKING_URI": "", **(extra_env or {})})
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return process, uri
        except OSError:
            pass
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(1)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """`mlflow server` over HTTP with a SQLite backend and served artifacts; yields its URI."""
    process, uri = _start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield uri
    _stop(process)


@dataclass
class AuthServer:
    uri: str
    username: str  # a non-admin user the pipeline logs as
    password: str = field(repr=False)
    store: Path = Path()  # backend database, auth database and artifacts: what a leak would be written to
    secrets: list[str] = field(default_factory=list, repr=False)  # every credential: none may be in the store


@pytest.fixture(scope="session")
def mlflow_auth_server(tmp_path_factory):
    """`mlflow server --app-name basic-auth` on loopback, SQLite backend, local artifact root, with a
    non-admin pipeline user created through the admin API."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    admin_password, password, flask_key = (secrets.token_urlsafe(18) for _ in range(3))
    config = root / "basic_auth.ini"
    config.write_text(textwrap.dedent(f"""\
        [mlflow]
        default_permission = READ
        database_uri = sqlite:///{root / "basic_auth.db"}
        admin_username = admin
        authorization_function = mlflow.server.auth:authenticate_request_basic_auth
        auth_cache_ttl_seconds = 60
        """))
    process, uri = _start_mlflow_server(root, ["--app-name", "basic-auth"], {
        "MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_key})
    admin = "Basic " + base64.b64encode(f"admin:{admin_password}".encode()).decode()
    request = urllib.request.Request(f"{uri}/api/2.0/mlflow/users/create", method="POST",
                                     data=json.dumps({"username": "bioray-pipeline", "password": password}).encode(),
                                     headers={"Authorization": admin, "Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).close()
    yield AuthServer(uri, "bioray-pipeline", password, root, [admin_password, password, flask_key])
    _stop(process)


@dataclass
class RayCluster:
    dashboard: str  # Jobs API / dashboard address, http://127.0.0.1:PORT
    env: dict  # what a client needs: RAY_AUTH_MODE and the token's path
    token: str = field(repr=False)
    temp_dir: Path  # the session's logs

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
    gcs_port, dashboard_port = _free_port(), _free_port()
    common = ["--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats", "--object-store-memory=500000000"]
    ray = str(Path(sys.executable).with_name("ray"))
    processes = [subprocess.Popen(
        [ray, "start", "--head", f"--port={gcs_port}", f"--num-cpus={head_cpus}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard_port}", f"--temp-dir={base / 'ray'}", *common],
        env=env, stdout=open(base / "head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)]
    cluster = RayCluster(f"http://127.0.0.1:{dashboard_port}", auth, token, base / "ray")
    try:
        _wait(lambda: cluster.node_ids(), "the head node", base / "head.log")
        processes.append(subprocess.Popen(
            [ray, "start", f"--address=127.0.0.1:{gcs_port}", f"--num-cpus={worker_cpus}", *common],
            env=env, stdout=open(base / "worker.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait(lambda: len(cluster.node_ids()) == 2, "the second node", base / "worker.log")
        yield cluster
    finally:
        for process in reversed(processes):  # `ray start --block` stops its node's processes on SIGTERM
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
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
    pytest.fail(f"Ray cluster: {what} did not come up in {seconds:.0f}s: {log.read_text()[-3000:]}")

"""Servers on loopback for tests: `mlflow server` (plain or with basic auth), `mlflow models serve`, an
S3 API server (moto's, a separate process spoken to over HTTP) and a TCP forwarder that makes a server
unreachable on demand (an outage) without stopping it."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerError(RuntimeError):
    """A test server did not come up; the message holds the end of its log."""


@dataclass
class MlflowServer:
    """`mlflow server` on loopback with a SQLite backend and served artifacts."""

    process: subprocess.Popen
    uri: str
    root: Path

    def stop(self) -> None:
        """The CLI and the uvicorn it starts (which outlives a killed CLI): their own process group."""
        _stop_group(self.process)


def _stop_group(process: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=20)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def start_mlflow_server(root: Path, extra_args: list[str] = (), extra_env: dict | None = None,
                        artifacts: str | None = None, timeout: float = 120) -> MlflowServer:
    """artifacts: where the server keeps them (default root/artifacts; s3://... with MLFLOW_S3_ENDPOINT_URL
    and the keys in extra_env)."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", artifacts or str(root / "artifacts"), "--workers", "2", *extra_args]
    log = open(root / "server.log", "a")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "MLFLOW_TRACKING_URI": "", **(extra_env or {})})
    uri = f"http://127.0.0.1:{port}"
    server = MlflowServer(process, uri, root)
    _wait_until_up(f"{uri}/health", process, timeout, server.stop, "mlflow server", root / "server.log")
    return server


def _wait_until_up(url: str, process: subprocess.Popen, timeout: float, stop, what: str, log: Path) -> None:
    """Until url answers 200; when the process exits first or the time is up, stop it and raise with
    the end of its log."""
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.time() > deadline:
            stop()
            raise ServerError(f"{what} did not start: {log.read_text()[-3000:]}")
        time.sleep(0.5)


@dataclass
class S3Server:
    """moto's S3 API server on loopback (`python -m moto.server`): buckets in its memory, every request
    over HTTP as with AWS or MinIO. `keys` are random credentials planted for one test: moto accepts
    any, so they prove only that nothing writes them anywhere (`leaks`)."""

    process: subprocess.Popen
    endpoint: str
    log: Path
    keys: dict[str, str] = field(repr=False)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.keys["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.keys["AWS_SECRET_ACCESS_KEY"])

    def bucket(self, name: str) -> str:
        """A new, empty bucket."""
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under prefix: key -> content."""
        client, found = self.client(), {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return found

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_s3_server(root: Path) -> S3Server:
    port = free_port()
    log = root / "s3-server.log"
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=open(log, "a"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    _wait_until_up(f"{endpoint}/moto-api/", process, 60, process.kill, "moto S3 server", log)
    keys = {"AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
            "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30)}
    return S3Server(process, endpoint, log, keys)


def leaks(roots: list[Path], needles: list[str]) -> list[str]:
    """Files under roots holding any of the secrets (bytes, so databases and binaries count too)."""
    encoded = [n.encode() for n in needles]
    return [str(path) for root in roots for path in root.rglob("*")
            if path.is_file() and not path.is_symlink() and any(n in path.read_bytes() for n in encoded)]


@dataclass
class ModelServer:
    """`mlflow models serve` on loopback: POST a JSON body to `invocations`."""

    process: subprocess.Popen
    uri: str
    log: Path

    def invoke(self, body: dict, timeout: float = 120) -> dict:
        request = urllib.request.Request(f"{self.uri}/invocations", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        """The CLI and the uvicorn server it started: their own process group."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=30)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


def serve_model(model_uri: str, log: Path, env: dict | None = None, timeout: float = 300) -> ModelServer:
    """`mlflow models serve -m model_uri --env-manager local` (this Python's environment: bioray and
    uvicorn from it), up once /ping answers."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # its uvicorn
    stream = open(log, "a")
    process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "PATH": path, **(env or {})})
    server = ModelServer(process, f"http://127.0.0.1:{port}", log)
    _wait_until_up(f"{server.uri}/ping", process, timeout, server.stop, "mlflow models serve", log)
    return server


@dataclass
class AuthServer:
    server: MlflowServer
    username: str  # a non-admin user the pipeline logs as
    password: str = field(repr=False)
    secrets: list[str] = field(default_factory=list, repr=False)  # every credential: none may be written anywhere

    @property
    def uri(self) -> str:
        return self.server.uri

    @property
    def store(self) -> Path:
        """Backend database, auth database and artifacts: where a leak would be written."""
        return self.server.root

    @property
    def credentials(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": self.username, "MLFLOW_TRACKING_PASSWORD": self.password}


def start_auth_server(root: Path) -> AuthServer:
    """`mlflow server --app-name basic-auth`, with a non-admin pipeline user created through the admin API."""
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
    server = start_mlflow_server(root, ["--app-name", "basic-auth"], {
        "MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_key})
    admin = "Basic " + base64.b64encode(f"admin:{admin_password}".encode()).decode()
    request = urllib.request.Request(f"{server.uri}/api/2.0/mlflow/users/create", method="POST",
                                     data=json.dumps({"username": "bioray-pipeline", "password": password}).encode(),
                                     headers={"Authorization": admin, "Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).close()
    return AuthServer(server, "bioray-pipeline", password, [admin_password, password, flask_key])


class TcpForwarder:
    """127.0.0.1:<port> -> target port, byte for byte. `down()` is an outage as clients see one: open
    connections are cut and new ones are accepted and closed at once; `up()` ends it. The server
    behind it keeps running, so an outage costs no restart."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.reachable = True
        threading.Thread(target=self._accept, name="forwarder-accept", daemon=True).start()

    def down(self) -> None:
        with self.lock:
            self.reachable = False
            for connection in self.connections:
                _close(connection)
            self.connections.clear()

    def up(self) -> None:
        with self.lock:
            self.reachable = True

    def close(self) -> None:
        self.down()
        _close(self.listener)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self.lock:
                if not self.reachable:
                    _close(client)
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=10)
                except OSError:
                    _close(client)
                    continue
                self.connections |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                _close(end)
            with self.lock:
                self.connections -= {source, sink}


def _close(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    connection.close()

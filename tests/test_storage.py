"""Ray Train storage on S3 (bioray.storage) against a real S3 API server on loopback (moto's, over
HTTP): a checkpoint written and read back the way Ray Train's workers do it, and the one-line errors
for an unusable store. The whole pipeline on S3 is tests/integration/test_s3_e2e.py (extended tier)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time

import pytest

from bioray.config import ConfigError, load_workflow
from bioray.storage import StorageError, check_storage, storage_uri, train_storage
from tests.support.cli import run_bioray
from tests.support.servers import free_port

READ_BACK = """
import pickle, sys
from ray.train import Checkpoint
fs, path = pickle.loads(sys.stdin.buffer.read())
with Checkpoint(path, filesystem=fs).as_directory() as directory:
    print(open(directory + "/state/weights.json").read())
"""


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The planted keys in this process's environment (as a Kubernetes Secret would put them)."""
    for name, value in s3_server.keys.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    return s3_server.keys


def test_checkpoint_round_trip_through_s3(s3_server, s3_env, tmp_path):
    import pyarrow.fs as pafs

    bucket = s3_server.bucket("round-trip")
    storage = f"s3://{bucket}/ray-train/"
    check_storage(storage, s3_server.endpoint)  # reachable, credentials set, bucket there
    path, filesystem = train_storage(storage, s3_server.endpoint)
    assert path == f"{bucket}/ray-train"
    checkpoint = tmp_path / "checkpoint"
    (checkpoint / "state").mkdir(parents=True)
    (checkpoint / "state" / "weights.json").write_text(json.dumps({"w": [0.25, -1.5]}))
    pafs.copy_files(str(checkpoint), f"{path}/run/checkpoint_1", destination_filesystem=filesystem)
    files = {k: v for k, v in s3_server.objects(bucket).items() if not k.endswith("/")}  # not pyarrow's dir markers
    assert files == {"ray-train/run/checkpoint_1/state/weights.json": b'{"w": [0.25, -1.5]}'}
    assert storage_uri(storage, f"{path}/run/checkpoint_1") == f"s3://{bucket}/ray-train/run/checkpoint_1"

    # what a Ray worker gets: the pickled filesystem carries the endpoint, not the keys ...
    shipped = pickle.dumps((filesystem, f"{path}/run/checkpoint_1"))
    assert s3_server.endpoint.encode() in shipped
    assert not any(key.encode() in shipped for key in s3_env.values())
    # ... which another process reads from its own environment to read the checkpoint back
    read = subprocess.run([sys.executable, "-c", READ_BACK], input=shipped, capture_output=True, timeout=120)
    assert read.returncode == 0, read.stderr.decode()[-2000:]
    assert json.loads(read.stdout) == {"w": [0.25, -1.5]}


def test_unusable_s3_storage_is_one_line_naming_the_cause(s3_server, s3_env, monkeypatch):
    s3_server.bucket("errors")
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket' does not exist at storage_endpoint http"):
        check_storage("s3://no-such-bucket/x", s3_server.endpoint)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(StorageError, match=rf"storage_endpoint {closed} cannot be used: .*connect") as down:
        check_storage("s3://errors/x", closed)
    assert time.monotonic() - started < 15 and "\n" not in str(down.value)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match=r"no S3 credentials in the environment: set AWS_SECRET_ACCESS_KEY ") as bare:
        check_storage("s3://errors/x", s3_server.endpoint)
    assert s3_env["AWS_ACCESS_KEY_ID"] not in str(bare.value)
    check_storage("/a/local/path", None)  # a local path is not checked here


def test_bioray_run_refuses_s3_storage_without_keys_before_any_stage(write_workflow, quickstart_tree):
    workflow = write_workflow({**quickstart_tree, "storage_path": "s3://bioray/ray-train",
                               "storage_endpoint": f"http://127.0.0.1:{free_port()}"})
    bare = {name: "" for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_WEB_IDENTITY_TOKEN_FILE",
                                  "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")}
    run = run_bioray("run", str(workflow), env=bare, timeout=300)
    assert run.returncode == 2, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if "storage_path" in line]
    assert len(errors) == 1 and "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in errors[0], run.stderr[-3000:]
    assert not (workflow.parent / "work" / "stages").exists()  # no stage ran


@pytest.mark.parametrize("storage, endpoint, error", [
    ("s3://b/ray", "http://AKIA1:secret@minio:9000", "no credentials in the URL"),
    ("/shared/ray", "http://minio:9000", "for an s3:// storage_path only"),
    ("s3://b/ray", "minio:9000", "is not an http"),
])
def test_storage_endpoint_is_checked(write_workflow, quickstart_tree, storage, endpoint, error):
    with pytest.raises(ConfigError, match=f"storage_endpoint: .*{error}"):
        load_workflow(write_workflow({**quickstart_tree, "storage_path": storage, "storage_endpoint": endpoint}))


def test_storage_endpoint_loads(write_workflow, quickstart_tree):
    config = load_workflow(write_workflow({**quickstart_tree, "storage_path": "s3://b/ray",
                                           "storage_endpoint": "http://minio.bioray.svc:9000"}))
    assert (config.train_storage, config.storage_endpoint) == ("s3://b/ray", "http://minio.bioray.svc:9000")

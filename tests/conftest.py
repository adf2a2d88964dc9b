"""Shared fixtures and the two test tiers.

Default tier (`python -m pytest tests`): every kind of behaviour in its cheapest real form. Tests
marked `extended` (the heavy end-to-end, fault, load and scale tests) are listed as skipped there;
`bash .ci/run-extended` runs them (`pytest tests --extended -m extended`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.support.data import DATA_ROOT, REPO, missing_data_reason

EXTENDED_REASON = "extended tier: run `bash .ci/run-extended`"
# MLflow's usage telemetry (off where CI is set, as in .ci/run) sets and unsets an environment variable
# from a thread while other threads iterate os.environ (requests' proxy lookup): a KeyError now and then.
# Off in every test process and the CLI processes they start, so a bare clone runs what CI runs.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def pytest_addoption(parser):
    parser.addoption("--extended", action="store_true", help="Run the extended tier's tests too.")


def pytest_collection_modifyitems(config, items):
    extended = config.getoption("--extended")
    for item in items:
        if "extended" in item.keywords and not extended:
            item.add_marker(pytest.mark.skip(reason=EXTENDED_REASON))
        for marker in item.iter_markers("needs_data"):
            missing = [path for path in marker.args if not (DATA_ROOT / path).exists()]
            if missing:
                item.add_marker(pytest.mark.skip(reason=missing_data_reason(missing)))


@pytest.fixture(autouse=True)
def _mlflow_process_state():
    """Every test ends with this process's MLflow tracking settings as it started."""
    from tests.support.workflows import mlflow_state_kept

    with mlflow_state_kept():
        yield


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data the tests read ($BIORAY_DATA_ROOT, ../shared/data or sample-data/: tests.support.data)."""
    return DATA_ROOT


@pytest.fixture
def quickstart_tree() -> dict:
    return yaml.safe_load((REPO / "workflows" / "quickstart.yaml").read_text())


@pytest.fixture
def write_workflow(tmp_path, data_root):
    """Write a workflow dict as YAML (data_root and workdir pointed at real places) and return its path."""

    def write(tree: dict, name: str = "wf.yaml") -> Path:
        tree = {**tree, "data_root": str(data_root), "workdir": str(tmp_path / "work")}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(tree, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every in-process test of the session (4 logical CPUs: two training workers
    and the data tasks beside them)."""
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def small_corpus(ray_session, data_root, tmp_path_factory) -> dict[str, Path]:
    """Documents (PMC articles, 400 abstracts) ingested and a 3,000-piece vocabulary trained on them,
    in this process on the session's Ray: {"documents": dir, "tokenizer": dir}."""
    from bioray.config import IngestConfig, SourceConfig, VocabConfig
    from bioray.data.ingest import run_ingest
    from bioray.data.vocab import run_vocab

    work = tmp_path_factory.mktemp("small-corpus")
    sources = [SourceConfig(name="pmc", format="pmc", path="pubmed-raw/pmc_oa_nxml"),
               SourceConfig(name="abstracts", format="jsonl", path="corpus/medical-abstracts-tc", max_docs=400)]
    (work / "ingest").mkdir()
    run_ingest(IngestConfig(sources=sources), data_root, work / "ingest")
    (work / "vocab").mkdir()
    run_vocab(VocabConfig(size=3000, sample_docs=200), work / "ingest" / "documents", work / "vocab", None)
    return {"documents": work / "ingest" / "documents", "tokenizer": work / "vocab" / "tokenizer"}


@pytest.fixture(scope="session")
def corpus_template(ray_session, data_root, tmp_path_factory) -> Path:
    """A workdir whose ingest, vocab and tokenize stages of `small_workflow` are committed, built once
    by the real runner; tests copy the stages they need (tests.support.workflows.copy_stages)."""
    return _template(data_root, tmp_path_factory.mktemp("corpus-template"), "tokenize")


@pytest.fixture(scope="session")
def pretrained_template(ray_session, data_root, tmp_path_factory) -> Path:
    """As corpus_template, with the (four-step, one-worker) pretrain stage committed too."""
    return _template(data_root, tmp_path_factory.mktemp("pretrained-template"), "pretrain")


def _template(data_root: Path, root: Path, last_stage: str) -> Path:
    from tests.support.workflows import run_in_process, small_workflow, write_workflow

    workflow = write_workflow(small_workflow(root / "work", data_root, name="template"), root / "template.yaml")
    summary = run_in_process(workflow, [last_stage])
    assert not summary.failed, summary.failed
    return root / "work"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """`mlflow server` over HTTP (SQLite backend, served artifacts), shared by the session (tests use
    experiments and model names of their own); yields its URI."""
    from tests.support.servers import start_mlflow_server

    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield server.uri
    server.stop()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """An S3 API server (moto's) on loopback, one per test module: tests.support.servers.S3Server."""
    from tests.support.servers import start_s3_server

    server = start_s3_server(tmp_path_factory.mktemp("s3-server"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlflow_auth_server(tmp_path_factory):
    """`mlflow server --app-name basic-auth` with a non-admin pipeline user, one per test module."""
    from tests.support.servers import start_auth_server

    server = start_auth_server(tmp_path_factory.mktemp("mlflow-auth"))
    yield server
    server.server.stop()


from mlflow.tracking import MlflowClient

from bioray.tracking.runs import flatten, log_lineage, log_params_and_tags
from bioray.tracking.store import ensure_experiment, tracking_uri_for


def test_default_store_is_sqlite_in_workdir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri_for(None, tmp_path / "mlflow.db") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri_for(None, tmp_path / "mlflow.db") == "http://127.0.0.1:5000"
    assert tracking_uri_for("sqlite:///x.db", tmp_path / "mlflow.db") == "sqlite:///x.db"


def test_local_experiment_keeps_artifacts_under_workdir(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = ensure_experiment(client, "exp", tmp_path / "mlartifacts")
    assert ensure_experiment(client, "exp", tmp_path / "mlartifacts") == experiment_id
    location = client.get_experiment(experiment_id).artifact_location
    assert location == (tmp_path / "mlartifacts").as_uri()


def test_many_params_are_logged_in_batches(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(ensure_experiment(client, "exp", tmp_path / "mlartifacts"))
    params = flatten({"section": {f"k{i}": i for i in range(250)}, "model": {"layers": 2}})
    log_params_and_tags(client, run.info.run_id, params, {"bioray.stage": "x"})
    logged = client.get_run(run.info.run_id).data
    assert len(logged.params) == 251 and logged.params["model.layers"] == "2" and logged.tags["bioray.stage"] == "x"


def test_ray_job_id_tag_from_the_job_supervisor_env(monkeypatch):
    from bioray.tracking.runs import common_tags

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert "ray.job_id" not in common_tags()
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR",
                       '{"runtime_env": {}, "metadata": {"job_submission_id": "raysubmit_abc123"}}')
    assert common_tags()["ray.job_id"] == "raysubmit_abc123"


def test_commit_from_job_metadata_where_the_upload_has_no_git(tmp_path, monkeypatch):
    """`ray job submit --working-dir` leaves .git out: the commit comes from the job's metadata."""
    from bioray.tracking.runs import common_tags

    monkeypatch.chdir(tmp_path)  # not a git checkout
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv("BIORAY_GIT_COMMIT", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    tags = common_tags()
    assert "mlflow.source.git.commit" not in tags and len(tags["bioray.code_digest"]) == 16
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"metadata": {"job_submission_id": "j1", "git_commit": '
                                                      '"abc123"}}')
    assert common_tags()["mlflow.source.git.commit"] == "abc123"


def test_stage_lineage_is_logged_as_dataset_inputs(tmp_path, write_workflow, quickstart_tree):
    """A fine-tuning stage's inputs: the pretrain output (digest = its stage key) and each data file."""
    from bioray.pipeline.inputs import load_checked
    from bioray.pipeline.plan import build_plan, compute_keys
    from bioray.pipeline.stage_runs import lineage

    config = load_checked(write_workflow(quickstart_tree))
    nodes = build_plan(config)
    keys = compute_keys(nodes)
    node = next(n for n in nodes if n.kind == "finetune")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("t", artifact_location=str(tmp_path / "a"))).info.run_id
    log_lineage(client, run_id, lineage(config, node, keys))
    inputs = {d.dataset.name: d for d in client.get_run(run_id).inputs.dataset_inputs}
    assert inputs["pretrain"].dataset.digest == keys["pretrain"]
    assert {t.key: t.value for t in inputs["pretrain"].tags}["mlflow.data.context"] == "train"
    assert len(inputs) == 1 + len(node.files) and all(len(d.dataset.digest) == 16 for d in inputs.values())
    ingest = next(n for n in nodes if n.kind == "ingest")
    assert len(ingest.files) > 10 and [i["name"] for i in lineage(config, ingest, keys)] == [
        f"ingest-files ({len(ingest.files)})"]  # a corpus is one entry, not one per file

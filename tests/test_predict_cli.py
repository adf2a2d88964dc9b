"""`bioray predict` given a model it cannot use: exit 2 and one line naming the model and why, no
traceback; an MLflow URI is read from the workflow's tracking store (`--workflow`), else
MLFLOW_TRACKING_URI, and never from a store MLflow would make in the working directory."""

from __future__ import annotations

import pytest

from tests.support.cli import REPO, run_bioray
from tests.support.workflows import small_workflow, write_workflow


def _refused(*args: str) -> str:
    stray = REPO / "mlflow.db"
    existed = stray.exists()
    done = run_bioray("predict", *args, stdin="Aspirin .")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert existed or not stray.exists(), "predict made an MLflow store in the working directory"
    return done.stderr


@pytest.mark.parametrize("model, message", [
    ("no/such/model", "error: --model no/such/model: no such model directory, and not an MLflow URI"),
    ("models:/bioray-ner-x@challenger", "error: --model models:/bioray-ner-x@challenger: an MLflow URI needs the "
                                        "tracking store that holds it"),
])
def test_a_model_that_cannot_be_used_is_one_line(model, message):
    assert message in _refused("--model", model)


def test_an_mlflow_uri_is_looked_up_in_the_workflows_store(tmp_path, data_root):
    work = tmp_path / "work"
    workflow = write_workflow(small_workflow(work, data_root), tmp_path / "wf.yaml")
    error = _refused("--model", "models:/bioray-ner-x@challenger", "--workflow", str(workflow))
    assert "error: --model models:/bioray-ner-x@challenger: " in error
    assert f"(tracking store sqlite:///{work / 'mlflow.db'})" in error  # the workflow's own store

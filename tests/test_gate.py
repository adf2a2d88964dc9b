"""Champion/challenger gate against a real MLflow model registry (SQLite store): the first version
becomes champion, a better one takes the alias, a worse one or one within the margin does not, and
versions scored on other datasets are not compared."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from bioray.config import GateConfig
from bioray.pipeline.gate import decide, run_gate

MODEL = "bioray-encoder"


@pytest.fixture()
def registry(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("gate", artifact_location=str(tmp_path / "artifacts"))
    client.create_registered_model(MODEL)
    return client, experiment


def _register(client: MlflowClient, experiment: str, scores: dict[str, float]) -> str:
    run = client.create_run(experiment)
    version = client.create_model_version(MODEL, source=f"runs:/{run.info.run_id}/encoder", run_id=run.info.run_id)
    for key, value in scores.items():
        client.set_model_version_tag(MODEL, version.version, key, f"{value:.6f}")
    client.set_registered_model_alias(MODEL, "challenger", version.version)
    return str(version.version)


def _champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(MODEL, "champion").version)


def test_champion_moves_only_when_the_challenger_wins(registry, tmp_path):
    client, experiment = registry
    gate = GateConfig(margin=0.5)
    first = _register(client, experiment, {"report/ncbi-disease/f1": 80.0, "report/chemprot/f1": 60.0,
                                           "report/blurb_style_macro": 70.0})
    assert run_gate(client, MODEL, first, gate, tmp_path)["reason"] == "no champion yet"
    assert _champion(client) == first

    # better on the mean of the common datasets (71.0 > 70.0 + 0.5): promoted
    better = _register(client, experiment, {"report/ncbi-disease/f1": 82.0, "report/chemprot/f1": 60.0})
    decision = run_gate(client, MODEL, better, gate, tmp_path)
    assert decision["promote"] and decision["champion_version"] == first
    assert decision["challenger_score"] == pytest.approx(71.0) and decision["champion_score"] == pytest.approx(70.0)
    assert _champion(client) == better
    assert client.get_model_version(MODEL, better).tags["promotion"] == "promoted"

    # within the margin (71.4 <= 71.0 + 0.5): kept, and the decision with both tables is written down
    close = _register(client, experiment, {"report/ncbi-disease/f1": 82.8, "report/chemprot/f1": 60.0})
    decision = run_gate(client, MODEL, close, gate, tmp_path)
    assert not decision["promote"] and _champion(client) == better
    assert client.get_model_version(MODEL, close).tags["promotion"] == "kept"
    saved = json.loads((tmp_path / "promotion.json").read_text())
    assert saved["challenger_scores"]["report/ncbi-disease/f1"] == pytest.approx(82.8)
    assert saved["champion_scores"]["report/ncbi-disease/f1"] == pytest.approx(82.0)
    table = (tmp_path / "promotion.md").read_text()
    assert "not promoted to `champion`" in table and "| report/ncbi-disease/f1 | 82.80 | 82.00 |" in table

    # scored on other datasets only: not comparable, the champion stays
    other = _register(client, experiment, {"report/biosses/pearson": 99.0})
    decision = run_gate(client, MODEL, other, gate, tmp_path)
    assert not decision["promote"] and "not comparable" in decision["reason"] and _champion(client) == better


def test_decision_on_a_named_metric():
    gate = GateConfig(metric="report/blurb_style_macro")
    champion = {"report/blurb_style_macro": 70.0, "report/ncbi-disease/f1": 90.0}
    assert decide({"report/blurb_style_macro": 70.1, "report/ncbi-disease/f1": 10.0}, champion, gate)["promote"]
    assert not decide({"report/blurb_style_macro": 69.0}, champion, gate)["promote"]
    assert "missing" in decide({"report/ncbi-disease/f1": 99.0}, champion, gate)["reason"]

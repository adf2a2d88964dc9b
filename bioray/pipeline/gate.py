"""Champion/challenger gate: the newly registered version (the challenger) takes the champion alias
only when it beats the current champion on the same tasks by more than the margin.

Scores are the report's per-dataset means (0-100, `report/<dataset>/<metric>`) and its BLURB-style
macro, stored as tags on every registered version, so the champion's scores are read from the
registry, not recomputed.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from mlflow.tracking import MlflowClient

from bioray.config import GateConfig
from bioray.metric_names import is_report_metric, report_macro

MACRO = report_macro()


def _score(scores: dict[str, float], metric: str, common: list[str]) -> float | None:
    if metric == "mean":
        return statistics.fmean(scores[name] for name in common) if common else None
    return scores.get(metric)


def decide(challenger: dict[str, float], champion: dict[str, float] | None, gate: GateConfig) -> dict:
    """The decision and its reason, from both versions' report scores."""
    common = sorted(k for k in challenger.keys() & (champion or challenger).keys() if k != MACRO)
    ours = _score(challenger, gate.metric, common)
    if champion is None:
        return {"promote": True, "reason": "no champion yet", "challenger_score": ours, "champion_score": None,
                "common": []}
    theirs = _score(champion, gate.metric, common)
    decision = {"challenger_score": ours, "champion_score": theirs, "common": common}
    if ours is None or theirs is None:
        missing = "no dataset scored for both" if gate.metric == "mean" else f"{gate.metric} missing on one side"
        return {**decision, "promote": False, "reason": f"not comparable ({missing}): champion kept"}
    if ours > theirs + gate.margin:
        return {**decision, "promote": True, "reason": f"challenger {ours:.2f} > champion {theirs:.2f} + margin "
                                                       f"{gate.margin:g}"}
    return {**decision, "promote": False, "reason": f"challenger {ours:.2f} <= champion {theirs:.2f} + margin "
                                                    f"{gate.margin:g}: champion kept"}


def version_scores(client: MlflowClient, model_name: str, version: str) -> dict[str, float]:
    tags = client.get_model_version(model_name, version).tags
    return {key: float(value) for key, value in tags.items() if is_report_metric(key)}


def run_gate(client: MlflowClient, model_name: str, version: str, gate: GateConfig, output: Path) -> dict:
    """Compare the version with the champion, move the alias if it wins; write promotion.json/.md."""
    challenger = version_scores(client, model_name, version)
    try:
        champion_version = str(client.get_model_version_by_alias(model_name, gate.alias).version)
    except Exception:  # MLflow raises RestException when the alias is not set
        champion_version = None
    champion = version_scores(client, model_name, champion_version) if champion_version else None
    decision = decide(challenger, champion, gate)
    decision.update(metric=gate.metric, margin=gate.margin, challenger_version=version,
                    champion_version=champion_version, challenger_scores=challenger, champion_scores=champion or {})
    if decision["promote"]:
        client.set_registered_model_alias(model_name, gate.alias, version)
    client.set_model_version_tag(model_name, version, "promotion", "promoted" if decision["promote"] else "kept")
    (output / "promotion.json").write_text(json.dumps(decision, indent=2))
    (output / "promotion.md").write_text(_markdown(decision, model_name, gate.alias))
    return decision


def _markdown(decision: dict, model_name: str, alias: str) -> str:
    verdict = "promoted to" if decision["promote"] else "not promoted to"
    lines = [f"# Promotion gate: {model_name} v{decision['challenger_version']} {verdict} `{alias}`", "",
             f"Reason: {decision['reason']} (metric `{decision['metric']}`, margin {decision['margin']:g}).", "",
             f"| score | challenger v{decision['challenger_version']} | champion "
             f"{'v' + decision['champion_version'] if decision['champion_version'] else '(none)'} |", "|---|---|---|"]
    names = sorted(decision["challenger_scores"].keys() | decision["champion_scores"].keys())
    for name in names:
        cells = [decision[side].get(name) for side in ("challenger_scores", "champion_scores")]
        lines.append(f"| {name} | " + " | ".join("—" if v is None else f"{v:.2f}" for v in cells) + " |")
    return "\n".join(lines) + "\n"

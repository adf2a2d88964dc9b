"""Report stage: every dataset's test score (mean ± std over seeds, k-fold datasets averaged over
folds first) beside the published BERT, BioBERT v1.1 and PubMedBERT numbers, and a BLURB-style
macro score over the task types present; as markdown, JSON and a bar chart."""

from __future__ import annotations

import json
import statistics
from importlib import resources
from pathlib import Path

import yaml

from bioray.plots import plot_scores
from bioray.tasks.registry import task_class

# The published columns shown, in order: (source, model key, header).
COLUMNS = [("blurb", "bert_uncased", "BERT uncased (BLURB)"), ("blurb", "biobert_v1.1", "BioBERT v1.1 (BLURB)"),
           ("blurb", "pubmedbert", "PubMedBERT (BLURB)"), ("biobert", "bert", "BERT (BioBERT paper)"),
           ("biobert", "biobert_v1.1", "BioBERT v1.1 (BioBERT paper)")]
MACRO_MODELS = [("blurb", "bert_uncased"), ("blurb", "biobert_v1.1"), ("blurb", "pubmedbert")]


def published() -> dict:
    return yaml.safe_load(resources.files("bioray.tasks").joinpath("published.yaml").read_text())


def aggregate(scores: list[dict]) -> dict[str, dict[str, dict]]:
    """Test scores, one record per evaluation ({dataset, seed, metrics}; a k-fold dataset has one per
    fold) -> {dataset: {metric: {mean, std, seeds}}}: a seed's score on a k-fold dataset is its mean
    over folds; mean and std are over seeds."""
    per_seed: dict[str, dict[str, dict[int, list[float]]]] = {}
    for record in scores:
        for metric, value in record["metrics"].items():
            if not metric.startswith("stage/"):
                per_seed.setdefault(record["dataset"], {}).setdefault(metric, {}).setdefault(
                    record["seed"], []).append(value)
    result: dict[str, dict[str, dict]] = {}
    for dataset, metrics in per_seed.items():
        for metric, seeds in metrics.items():
            values = [statistics.fmean(folds) for folds in seeds.values()]
            result.setdefault(dataset, {})[metric] = {
                "mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "seeds": len(values)}
    return result


def _macro(scores: dict[str, float], types: dict[str, str | None]) -> float | None:
    """BLURB's macro: the mean over task types of the mean over each type's datasets."""
    by_type: dict[str, list[float]] = {}
    for dataset, score in scores.items():
        if types.get(dataset):
            by_type.setdefault(types[dataset], []).append(score)
    return statistics.fmean(statistics.fmean(v) for v in by_type.values()) if by_type else None


def build_report(datasets: dict[str, dict], scores: list[dict]) -> dict:
    """The rows of the report (scores on a 0-100 scale) and the macro scores."""
    reference = published()
    aggregated = aggregate(scores)
    rows = []
    for name, entry in datasets.items():
        metric = task_class(entry["task"]).primary_metric
        ours = aggregated.get(name, {}).get(f"{entry['task']}/test_{metric}")
        paper = reference["benchmarks"].get(entry["benchmark"], {})
        rows.append({
            "dataset": name, "task": entry["task"], "metric": metric, "benchmark": entry["benchmark"],
            "blurb_task": paper.get("blurb_task"),
            "bioray": None if ours is None else {k: (v * 100 if k != "seeds" else v) for k, v in ours.items()},
            "published": {f"{source}/{model}": paper.get(source, {}).get(model) for source, model, _ in COLUMNS},
        })
    scored, seen = [], set()
    for row in rows:  # a benchmark counts once in the macro, though several entries may report beside it
        if row["bioray"] and row["blurb_task"] and row["benchmark"] not in seen:
            scored.append(row)
            seen.add(row["benchmark"])
    types = {r["dataset"]: r["blurb_task"] for r in scored}
    macro = {"bioray": _macro({r["dataset"]: r["bioray"]["mean"] for r in scored}, types)}
    for source, model in MACRO_MODELS:  # over the same datasets, where the paper has all of them
        numbers = {r["dataset"]: r["published"][f"{source}/{model}"] for r in scored}
        macro[f"{source}/{model}"] = _macro(numbers, types) if scored and None not in numbers.values() else None
    present = sorted(set(types.values()))
    missing = [t for t in reference["blurb_task_types"] if t not in present]
    return {"rows": rows, "macro": macro, "macro_task_types": present, "missing_task_types": missing}


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def render_markdown(report: dict) -> str:
    lines = ["# Downstream evaluation", "",
             "Test-set scores on a 0–100 scale; bioray: mean ± std over seeds (k-fold datasets: mean over folds "
             "per seed). Published numbers: BLURB = Gu et al. 2021 Table 6; BioBERT paper = Lee et al. 2020 "
             "Tables 6–8 (sources in bioray/tasks/published.yaml). Published numbers come from the papers' own "
             "splits and preprocessing, which may differ from these files (see the README's dataset notes).", "",
             "| dataset | task | metric | bioray | " + " | ".join(h for _, _, h in COLUMNS) + " |",
             "|---" * (4 + len(COLUMNS)) + "|"]
    for row in report["rows"]:
        ours = row["bioray"]
        cell = "not run" if ours is None else f"{ours['mean']:.2f} ± {ours['std']:.2f} (n={ours['seeds']})"
        published_cells = " | ".join(_cell(row["published"][f"{s}/{m}"]) for s, m, _ in COLUMNS)
        lines.append(f"| {row['dataset']} | {row['task']} | {row['metric']} | {cell} | {published_cells} |")
    macro = report["macro"]
    lines += ["", "## BLURB-style macro score", ""]
    if macro["bioray"] is None:
        lines.append("No dataset of a BLURB task type was scored.")
    else:
        lines.append(f"Mean over task types ({', '.join(report['macro_task_types'])}) of the mean over each type's "
                     f"datasets; missing BLURB types: {', '.join(report['missing_task_types']) or 'none'}, so this is "
                     "not the official BLURB score. The published models' macro is over the same datasets.")
        lines += ["", "| model | macro |", "|---|---|", f"| bioray | {macro['bioray']:.2f} |"]
        for (source, model), (_, _, header) in zip(MACRO_MODELS, COLUMNS):
            lines.append(f"| {header} | {_cell(macro[f'{source}/{model}'])} |")
    return "\n".join(lines) + "\n"


def run_report(datasets: dict[str, dict], scores: list[dict], output: Path) -> dict:
    """report.json, report.md and scores.png; the metrics: each dataset's primary score (0-100,
    `report/<dataset>/<metric>`), the macro, and every test metric's mean over seeds (0-1,
    `<dataset>/<metric>`, plus `_std` when there are several seeds)."""
    report = build_report(datasets, scores)
    (output / "report.json").write_text(json.dumps(report, indent=2))
    (output / "report.md").write_text(render_markdown(report))
    plot_scores(report["rows"], [(f"{s}/{m}", h) for s, m, h in COLUMNS[:3]], output / "scores.png")
    metrics = {f"report/{r['dataset']}/{r['metric']}": r["bioray"]["mean"] for r in report["rows"] if r["bioray"]}
    if report["macro"]["bioray"] is not None:
        metrics["report/blurb_style_macro"] = report["macro"]["bioray"]
    for dataset, values in aggregate(scores).items():
        for metric, summary in values.items():
            metrics[f"{dataset}/{metric}"] = summary["mean"]
            if summary["seeds"] > 1:
                metrics[f"{dataset}/{metric}_std"] = summary["std"]
    return metrics

"""Report stage: every dataset's test score (mean ± std over seeds, k-fold datasets averaged over
folds first) beside the published BERT, BioBERT v1.1 and PubMedBERT numbers of its benchmark, and a
BLURB-style macro score over the BLURB-protocol benchmarks present (naming the BLURB datasets that are
missing); as markdown, JSON and a bar chart."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bioray.metric_names import dataset_mean, is_stage_metric, report_macro, report_score, test_score
from bioray.plots import plot_scores
from bioray.tasks.published import published

# The published columns shown, in order: (source, model key, header).
COLUMNS = [("blurb", "bert_uncased", "BERT uncased (BLURB)"), ("blurb", "biobert_v1.1", "BioBERT v1.1 (BLURB)"),
           ("blurb", "pubmedbert", "PubMedBERT (BLURB)"), ("biobert", "bert", "BERT (BioBERT paper)"),
           ("biobert", "biobert_v1.1", "BioBERT v1.1 (BioBERT paper)")]
MACRO_MODELS = [("blurb", "bert_uncased"), ("blurb", "biobert_v1.1"), ("blurb", "pubmedbert")]


def aggregate(scores: list[dict]) -> dict[str, dict[str, dict]]:
    """Test scores, one record per evaluation ({dataset, seed, metrics}; a k-fold dataset has one per
    fold) -> {dataset: {metric: {mean, std, seeds}}}: a seed's score on a k-fold dataset is its mean
    over folds; mean and std are over seeds."""
    per_seed: dict[str, dict[str, dict[int, list[float]]]] = {}
    for record in scores:
        for metric, value in record["metrics"].items():
            if not is_stage_metric(metric):
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


def build_report(datasets: dict[str, dict], scores: list[dict], arms: list[str] | None = None) -> dict:
    """The rows of the report (scores on a 0-100 scale) and the macro scores. `datasets`: name ->
    {task, metric, benchmark (a published entry, or None)}. With `arms` (several encoders), each row has
    one score per arm (`arms`), and each arm a macro; `bioray` is the first's. The macro counts only
    benchmarks of BLURB's protocol (their `blurb_task`), each once."""
    reference = published()
    names = arms or ["bioray"]
    by_arm = {arm: aggregate([s for s in scores if arms is None or s.get("arm") == arm]) for arm in names}
    rows = []
    for name, entry in datasets.items():
        metric = entry["metric"]
        paper = reference["benchmarks"].get(entry["benchmark"], {}) if entry["benchmark"] else {}
        ours = {arm: _scaled(by_arm[arm].get(name, {}).get(test_score(entry["task"], metric))) for arm in names}
        rows.append({
            "dataset": name, "task": entry["task"], "metric": metric, "benchmark": entry["benchmark"],
            "blurb_task": paper.get("blurb_task"), "bioray": ours[names[0]], "arms": ours,
            "published": {f"{source}/{model}": paper.get(source, {}).get(model) for source, model, _ in COLUMNS},
        })
    scored, seen = [], set()
    for row in rows:  # a benchmark counts once in the macro, though several entries may report beside it
        if any(row["arms"].values()) and row["blurb_task"] and row["benchmark"] not in seen:
            scored.append(row)
            seen.add(row["benchmark"])
    types = {r["dataset"]: r["blurb_task"] for r in scored}
    macro_arms = {arm: _macro({r["dataset"]: r["arms"][arm]["mean"] for r in scored if r["arms"][arm]}, types)
                  for arm in names}
    macro = {"bioray": macro_arms[names[0]], "arms": macro_arms}
    for source, model in MACRO_MODELS:  # over the same datasets, where the paper has all of them
        numbers = {r["dataset"]: r["published"][f"{source}/{model}"] for r in scored}
        macro[f"{source}/{model}"] = _macro(numbers, types) if scored and None not in numbers.values() else None
    present = sorted(set(types.values()))
    missing = [t for t in reference["blurb_task_types"] if t not in present]
    missing_datasets = [d for d in reference["blurb_datasets"] if d not in seen]
    return {"rows": rows, "arms": names, "macro": macro, "macro_task_types": present, "missing_task_types": missing,
            "missing_blurb_datasets": missing_datasets}


def _scaled(summary: dict | None) -> dict | None:
    return None if summary is None else {k: (v * 100 if k != "seeds" else v) for k, v in summary.items()}


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def render_markdown(report: dict) -> str:
    arms = report["arms"]
    headers = ["bioray"] if arms == ["bioray"] else [f"bioray: {arm}" for arm in arms]
    lines = ["# Downstream evaluation", "",
             "Test-set scores on a 0–100 scale; bioray: mean ± std over seeds (k-fold datasets: mean over folds "
             "per seed). Published numbers: BLURB = Gu et al. 2021 Table 6; BioBERT paper = Lee et al. 2020 "
             "Tables 6–8 (sources in bioray/tasks/published.yaml). Published numbers come from the papers' own "
             "splits and preprocessing, which may differ from these files (see bioray's docs/datasets.md).", "",
             f"| dataset | task | metric | {' | '.join(headers)} | " + " | ".join(h for _, _, h in COLUMNS) + " |",
             "|---" * (3 + len(headers) + len(COLUMNS)) + "|"]
    for row in report["rows"]:
        cells = ["not run" if ours is None else f"{ours['mean']:.2f} ± {ours['std']:.2f} (n={ours['seeds']})"
                 for ours in (row["arms"][arm] for arm in arms)]
        published_cells = " | ".join(_cell(row["published"][f"{s}/{m}"]) for s, m, _ in COLUMNS)
        lines.append(f"| {row['dataset']} | {row['task']} | {row['metric']} | {' | '.join(cells)} "
                     f"| {published_cells} |")
    if report.get("nondeterministic"):
        lines += ["", "Not reproducible to the last digit: these stages' outputs may differ between runs of the same "
                  "workflow (docs/reproducibility.md): " + "; ".join(f"{stage} ({why})" for stage, why in
                                                                     report["nondeterministic"].items()) + "."]
    macro = report["macro"]
    lines += ["", "## BLURB-style macro score", ""]
    if all(value is None for value in macro["arms"].values()):
        lines.append("No dataset of a BLURB task type was scored.")
    else:
        complete = not report["missing_blurb_datasets"]
        lines.append(f"Mean over task types ({', '.join(report['macro_task_types'])}) of the mean over each type's "
                     "datasets, BLURB-protocol benchmarks only; "
                     + ("all 13 BLURB datasets scored." if complete else
                        f"BLURB datasets not scored: {', '.join(report['missing_blurb_datasets'])} (missing task "
                        f"types: {', '.join(report['missing_task_types']) or 'none'}), so this is not the official "
                        "BLURB score.")
                     + " The published models' macro is over the same datasets.")
        lines += ["", "| model | macro |", "|---|---|"]
        lines += [f"| {header} | {_cell(macro['arms'][arm])} |" for arm, header in zip(arms, headers)]
        for (source, model), (_, _, header) in zip(MACRO_MODELS, COLUMNS):
            lines.append(f"| {header} | {_cell(macro[f'{source}/{model}'])} |")
    return "\n".join(lines) + "\n"


def run_report(datasets: dict[str, dict], scores: list[dict], output: Path, arms: list[str] | None = None,
               nondeterministic: dict[str, str] | None = None) -> dict:
    """report.json, report.md and scores.png; the metrics: each dataset's primary score (0-100,
    `report/[<arm>/]<dataset>/<metric>`), the macro, and every test metric's mean over seeds (0-1,
    `[<arm>/]<dataset>/<metric>`, plus `_std` when there are several seeds). `nondeterministic`: the
    stages behind the scores whose output may differ between runs, with why (said under the table)."""
    report = build_report(datasets, scores, arms) | {"nondeterministic": nondeterministic or {}}
    (output / "report.json").write_text(json.dumps(report, indent=2))
    (output / "report.md").write_text(render_markdown(report))
    plot_scores(report["rows"], report["arms"], [(f"{s}/{m}", h) for s, m, h in COLUMNS[:3]], output / "scores.png")
    metrics = {}
    for arm in report["arms"]:
        named = None if arms is None else arm
        for row in report["rows"]:
            if row["arms"][arm]:
                metrics[report_score(row["dataset"], row["metric"], named)] = row["arms"][arm]["mean"]
        if report["macro"]["arms"][arm] is not None:
            metrics[report_macro(named)] = report["macro"]["arms"][arm]
        records = [s for s in scores if arms is None or s.get("arm") == arm]
        for dataset, values in aggregate(records).items():
            for metric, summary in values.items():
                metrics[dataset_mean(dataset, metric, named)] = summary["mean"]
                if summary["seeds"] > 1:
                    metrics[dataset_mean(dataset, f"{metric}_std", named)] = summary["std"]
    return metrics

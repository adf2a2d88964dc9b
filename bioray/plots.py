"""Plots logged to MLflow: results people would rather see than read."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_history(history: list[dict], keys: list[str], path: Path, title: str) -> None:
    """One panel per metric against the step."""
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5))
    for axis, key in zip(axes if len(keys) > 1 else [axes], keys):
        points = [(h["step"], h[key]) for h in history if key in h]
        if points:
            axis.plot(*zip(*points), marker=".")
        axis.set_xlabel("step")
        axis.set_title(key)
        axis.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_scores(rows: list[dict], arms: list[str], published: list[tuple[str, str]], path: Path) -> None:
    """Grouped bars per dataset: bioray's arms (with their std over seeds) beside published models."""
    import numpy as np

    names = [r["dataset"] for r in rows]
    series = [(arm, [r["arms"][arm]["mean"] if r["arms"][arm] else np.nan for r in rows],
               [r["arms"][arm]["std"] if r["arms"][arm] else 0.0 for r in rows]) for arm in arms]
    series += [(header, [r["published"][key] if r["published"][key] is not None else np.nan for r in rows], None)
               for key, header in published]
    width = 0.8 / len(series)
    fig, axis = plt.subplots(figsize=(max(6.0, 1.6 * len(rows)), 4))
    for i, (label, values, errors) in enumerate(series):
        positions = np.arange(len(rows)) + (i - (len(series) - 1) / 2) * width
        axis.bar(positions, values, width, yerr=errors, label=label, capsize=3)
    axis.set_xticks(np.arange(len(rows)), names, rotation=20)
    axis.set_ylabel("test score (0-100)")
    axis.set_ylim(0, 100)
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

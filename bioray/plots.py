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

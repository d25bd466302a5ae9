"""Charts of the report: the model against its baselines per slice, and the training curves.

PNG files written with matplotlib's Agg backend (no display), from the same frames the tables
and the tracked metrics come from (`evaluation.evaluate_slices`' rows, finetune's curves.csv).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .evaluation import MODEL

MODEL_COLOUR, BASELINE_COLOURS = "#d62728", ["#1f77b4", "#9ecae1", "#6baed6", "#3182bd", "#08519c", "#c6dbef",
                                             "#4292c6", "#2171b5"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def slice_chart(frame: pd.DataFrame, path: str | Path, metric: str = "ndcg@20") -> Path:
    """Grouped bars: per slice, every baseline the slice names, then the model (red), by ``metric``."""
    plt = _pyplot()
    slices = list(dict.fromkeys(frame["slice"]))
    baselines = list(dict.fromkeys(frame.loc[frame["kind"] == "baseline", "ranker"]))
    rankers = baselines + ([MODEL] if MODEL in set(frame["ranker"]) else [])
    values = frame.pivot_table(index="slice", columns="ranker", values=metric, aggfunc="first", sort=False)
    values = values.reindex(index=slices, columns=rankers)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.6 * len(slices)), 4.8), dpi=110)
    width = 0.8 / max(1, len(rankers))
    x = np.arange(len(slices))
    for n, ranker in enumerate(rankers):
        colour = MODEL_COLOUR if ranker == MODEL else BASELINE_COLOURS[n % len(BASELINE_COLOURS)]
        ax.bar(x + (n - (len(rankers) - 1) / 2) * width, values[ranker].to_numpy(dtype=float), width,
               label=ranker, color=colour, edgecolor="white", linewidth=0.5)
    ax.set_xticks(x, slices, rotation=20, ha="right")
    ax.set_ylabel(metric.upper().replace("@", "@"))
    ax.set_title(f"Cold-start protocol: model vs baselines ({metric.upper()})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncols=min(5, len(rankers)), fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def curves_chart(curves: pd.DataFrame, path: str | Path) -> Path:
    """Training loss and every validation column per epoch, one panel each."""
    plt = _pyplot()
    columns = [c for c in curves.columns if c != "epoch"]
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.6), dpi=110, squeeze=False)
    for ax, column in zip(axes[0], columns):
        ax.plot(curves["epoch"], curves[column], marker="o", markersize=3,
                color=MODEL_COLOUR if column == "loss" else BASELINE_COLOURS[0])
        ax.set_title(column)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle("Fine-tuning")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)

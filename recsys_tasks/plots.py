"""Charts of a run (a leaf module: stages draw with it, it imports no stage): the model against its
baselines per slice, and the training curves.

PNG files written with matplotlib's Agg backend (no display), from the same frames the tables
and the tracked metrics come from (`evaluation.evaluate_slices`' rows, finetune's curves.csv).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

MODEL = "model"  # the ranker name of the model in evaluation frames (`evaluation.table.MODEL`)
MODEL_COLOUR = "#d62728"  # red; baselines take matplotlib's tab10 without its red
BASELINE_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def slice_chart(frame: pd.DataFrame, path: str | Path, metric: str = "ndcg@20") -> Path:
    """Grouped bars: per slice, the baselines it names, then the model (red), by ``metric``."""
    plt = _pyplot()
    slices = list(dict.fromkeys(frame["slice"]))
    baselines = list(dict.fromkeys(frame.loc[frame["kind"] == "baseline", "ranker"]))
    colours = {name: BASELINE_COLOURS[n % len(BASELINE_COLOURS)] for n, name in enumerate(baselines)}
    colours[MODEL] = MODEL_COLOUR
    fig, ax = plt.subplots(figsize=(max(8.0, 1.5 * len(slices) + 2.5), 4.8), dpi=110)
    width, drawn = 0.8 / max(1, frame.groupby("slice")["ranker"].nunique().max() if len(frame) else 1), set()
    for x, name in enumerate(slices):
        rows = frame[(frame["slice"] == name) & frame[metric].notna()]
        rows = rows.assign(order=rows["ranker"].map(lambda r: len(baselines) if r == MODEL else baselines.index(r)))
        rows = rows.sort_values("order")
        for n, (ranker, value) in enumerate(zip(rows["ranker"], rows[metric])):
            ax.bar(
                x + (n - (len(rows) - 1) / 2) * width,
                value,
                width,
                color=colours[ranker],
                edgecolor="white",
                linewidth=0.5,
                label=None if ranker in drawn else ranker,
            )
            drawn.add(ranker)
    ax.set_xticks(np.arange(len(slices)), slices, rotation=20, ha="right")
    ax.set_ylabel(metric.upper())
    ax.set_title(f"Cold-start protocol: model vs baselines ({metric.upper()})")
    ax.grid(axis="y", alpha=0.3)
    if drawn:
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: labels[i] == MODEL)
        ax.legend(
            [handles[i] for i in order],
            [labels[i] for i in order],
            fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
        )
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
        ax.plot(
            curves["epoch"],
            curves[column],
            marker="o",
            markersize=3,
            color=MODEL_COLOUR if column == "loss" else BASELINE_COLOURS[0],
        )
        ax.set_title(column)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle("Fine-tuning")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)

"""Stage 5, evaluate: every slice of the cold-start protocol, baselines fit in the same run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recsys_tasks.artifacts import StageResult, atomic_dir, finish, write_json
from recsys_tasks.config import EvaluateConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.split import Split
from recsys_tasks.evaluation.baselines import baselines_for
from recsys_tasks.evaluation.table import evaluate_slices, flat_metrics, summary_table, to_markdown
from recsys_tasks.model.recommender import Recommender
from recsys_tasks.plots import slice_chart
from recsys_tasks.protocol.queries import Scorer
from recsys_tasks.protocol.slices import build_slices

log = logging.getLogger(__name__)


def evaluate(
    cfg: EvaluateConfig,
    snapshot_dir: str | Path,
    text_dir: str | Path,
    bundle_dir: str | Path,
    out_dir: str | Path,
    positive_threshold: float = 4.0,
) -> StageResult:
    """Score the model in ``bundle_dir`` and every baseline on the snapshot's split.

    Writes ``results.csv`` (slice x ranker), ``table.md`` (the report) and ``metrics.json``.
    A split without holdout (all fractions 0) has no slices: the result says so and has no metrics.
    """
    return evaluate_scorer(cfg, snapshot_dir, text_dir, Recommender.load(bundle_dir), out_dir, positive_threshold)


def evaluate_scorer(
    cfg: EvaluateConfig,
    snapshot_dir: str | Path,
    text_dir: str | Path,
    model: Scorer,
    out_dir: str | Path,
    positive_threshold: float = 4.0,
) -> StageResult:
    dataset, split = Dataset.load(snapshot_dir), Split.load(snapshot_dir)
    slices = build_slices(dataset, split, cfg, positive_threshold)
    with atomic_dir(out_dir) as tmp:
        if not slices:
            write_json(tmp / "metrics.json", {})
            return finish(
                StageResult(
                    "evaluate",
                    str(Path(out_dir)),
                    {"metrics": str(tmp / "metrics.json")},
                    {},
                    {"evaluated": False, "reason": "no holdout: nothing to evaluate on"},
                ),
                tmp,
            )
        item_text = np.load(Path(text_dir) / "items.npy")
        frame = evaluate_slices(slices, baselines_for(dataset, split, cfg, item_text, positive_threshold), model, cfg.k)
        table = summary_table(frame)
        markdown = to_markdown(table)
        metrics = flat_metrics(frame)
        frame.to_csv(tmp / "results.csv", index=False)
        table.to_csv(tmp / "table.csv", index=False)
        (tmp / "table.md").write_text(markdown + "\n")
        write_json(tmp / "metrics.json", metrics)
        slice_chart(frame, tmp / "slices.png", f"ndcg@{cfg.k}")
        log.info("evaluation (NDCG@%d):\n%s", cfg.k, markdown)
        artifacts = {
            name: str(tmp / name) for name in ("results.csv", "table.csv", "table.md", "metrics.json", "slices.png")
        }
        return finish(
            StageResult("evaluate", str(Path(out_dir)), artifacts, metrics, {"evaluated": True, "table": markdown}), tmp
        )

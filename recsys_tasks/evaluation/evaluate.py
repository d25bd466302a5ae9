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
from recsys_tasks.evaluation.table import beyond_table, evaluate_slices, flat_metrics, summary_table, to_markdown
from recsys_tasks.model.recommender import Recommender
from recsys_tasks.plots import slice_chart
from recsys_tasks.protocol.beyond import genre_matrix, training_popularity
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

    Writes ``results.csv`` (slice x ranker), ``table.csv`` (NDCG), ``beyond.csv`` (coverage, novelty,
    diversity, popularity share), ``table.md`` (both tables) and ``metrics.json``.
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
        item_ids = dataset.items["item_id"].astype(str).tolist()
        frame = evaluate_slices(
            slices,
            baselines_for(dataset, split, cfg, item_text, positive_threshold),
            model,
            cfg.k,
            item_popularity=training_popularity(item_ids, split.train),
            item_genres=genre_matrix(dataset.genre_lists()),
        )
        table, beyond = summary_table(frame), beyond_table(frame)
        markdown, beyond_markdown = to_markdown(table), to_markdown(beyond)
        metrics = flat_metrics(frame)
        frame.to_csv(tmp / "results.csv", index=False)
        table.to_csv(tmp / "table.csv", index=False)
        beyond.to_csv(tmp / "beyond.csv", index=False)
        (tmp / "table.md").write_text(f"{markdown}\nBeyond accuracy (top {cfg.k}):\n\n{beyond_markdown}")
        write_json(tmp / "metrics.json", metrics)
        slice_chart(frame, tmp / "slices.png", f"ndcg@{cfg.k}")
        log.info("evaluation (NDCG@%d):\n%s", cfg.k, markdown)
        log.info("beyond accuracy (top %d):\n%s", cfg.k, beyond_markdown)
        names = ("results.csv", "table.csv", "beyond.csv", "table.md", "metrics.json", "slices.png")
        artifacts = {name: str(tmp / name) for name in names}
        info = {"evaluated": True, "table": markdown, "beyond_table": beyond_markdown}
        return finish(StageResult("evaluate", str(Path(out_dir)), artifacts, metrics, info), tmp)

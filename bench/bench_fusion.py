"""Would fusing the model with item-kNN help? A measurement on `bench_quality.py`'s trained models.

    python bench/bench_quality.py --seeds 42 43 44 --workdir W    # trains and evaluates
    python bench/bench_fusion.py --workdir W [--seeds 42 43 44]

For each seed: s = z(model) + β·z(item-kNN over the history), z standardising each query's
scores over the catalog, the kNN cosine matrix from the training part of the users finetune fit
on (the validation users left out). β over a grid, on finetune's own validation users (pseudo-cold
`at_0`, `at_10`; `warm`: their first 80% as history) and on the protocol's test slices, side by
side: the β validation picks, and what it does on the test slices. Nothing here is part of the
served model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from recsys_tasks import train as finetune_module
from recsys_tasks.baselines import ItemKNN
from recsys_tasks.config import PipelineConfig
from recsys_tasks.dataset import Dataset
from recsys_tasks.metrics import ranking_metrics
from recsys_tasks.recommender import Recommender
from recsys_tasks.slices import build_slices
from recsys_tasks.split import Split

BETAS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)
TEST_SLICES = ("cold-user@5", "cold-user@10", "cold-user@20", "warm")


def _z(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    return (scores - scores.mean(1, keepdims=True)) / (scores.std(1, keepdims=True) + 1e-9)


def _ndcg(scores: np.ndarray, candidates: np.ndarray, positives: list[np.ndarray]) -> float:
    return float(np.nanmean(ranking_metrics(scores, candidates, positives, 20, with_auc=False)["ndcg"]))


def seed_table(workdir: Path, seed: int) -> list[tuple[str, list[float]]]:
    """(part, NDCG@20 per β) for the validation parts and the test slices of one seed."""
    cfg = PipelineConfig().with_overrides([f"extract.seed={seed}", f"finetune.seed={seed}"])
    snapshot = workdir / f"seed{seed}" / "extract"
    dataset, split = Dataset.load(snapshot), Split.load(snapshot)
    rec = Recommender.load(workdir / f"seed{seed}" / "variant0" / "finetune" / "bundle")
    item_ids = dataset.items["item_id"].astype(str).tolist()
    train = split.train
    val_users = finetune_module._validation_users(train, cfg.finetune.validation_user_frac,
                                                   np.random.default_rng(cfg.finetune.seed))  # finetune's draw
    knn = ItemKNN(item_ids, train[~train["user_id"].isin(val_users)])
    rows = []
    held = train[train["user_id"].isin(val_users)]
    for name, queries, positives in finetune_module._validation_queries(rec, dataset, held, 4.0):
        if not queries:
            continue
        candidates = np.ones((len(queries), len(item_ids)), bool)
        for i, q in enumerate(queries):
            candidates[i, [rec.item_row[x] for x in q.history_items]] = False
        model, neighbours = _z(rec.score(queries)), _z(knn.score(queries)) if name != "at_0" else 0.0
        rows.append((f"validation {name}", [_ndcg(model + b * neighbours, candidates, positives) for b in BETAS]))
    slices = {s.name: s for s in build_slices(dataset, split, cfg.evaluate, 4.0)}
    for name in TEST_SLICES:
        s = slices[name]
        model, neighbours = _z(rec.score(list(s.queries))), _z(knn.score(list(s.queries)))
        rows.append((f"test {name}", [_ndcg(model + b * neighbours, s.candidates, list(s.positives)) for b in BETAS]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a bench_quality.py --workdir")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    args = parser.parse_args()
    header = "| part | " + " | ".join(f"β={b:g}" for b in BETAS) + " |"
    for seed in args.seeds:
        print(f"\n## seed {seed}: NDCG@20 of z(model) + β·z(item-kNN)\n\n{header}\n|---|" + "---|" * len(BETAS))
        for part, values in seed_table(Path(args.workdir), seed):
            best = int(np.argmax(values))
            print(f"| {part} | " + " | ".join(f"**{v:.4f}**" if i == best else f"{v:.4f}"
                                           for i, v in enumerate(values)) + " |")


if __name__ == "__main__":
    main()

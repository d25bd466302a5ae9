"""finetune's held-out users: the validation users (early stopping) and the fusion users, their queries,
and validation NDCG scored a block of queries at a time (memory: block x items, never users x items)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from recsys_tasks.config import FinetuneConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.protocol.metrics import ranking_metrics
from recsys_tasks.protocol.queries import Query, history_of, profile_of

__all__ = [
    "WARM_HISTORY",
    "blocks",
    "fusion_queries",
    "held_out_users",
    "unseen",
    "validate",
    "validation_queries",
]

WARM_HISTORY = 0.8  # the warm validation's history: each validation user's first 80% ("warm")


def held_out_users(
    train: pd.DataFrame,
    frac: float,
    fusion_frac: float,
    rng: np.random.Generator,
    max_users: int | None = None,
    max_fusion_users: int | None = None,
) -> tuple[set[str], set[str]]:
    """Two disjoint seeded samples of the training users, held out of training: the validation users
    (early stopping) and the fusion's (its weights: users the early stopping did not choose the model on);
    each ``frac`` of the users, at most ``max_users`` / ``max_fusion_users`` (None: no bound)."""
    users = np.sort(train["user_id"].unique())
    n, m = (int(round(len(users) * f)) if len(users) > 1 else 0 for f in (frac, fusion_frac))
    n, m = (
        min(n, max_users if max_users is not None else n),
        min(m, max_fusion_users if max_fusion_users is not None else m),
    )
    drawn = rng.permutation(users).tolist()
    return set(drawn[:n]), set(drawn[n : n + m])


def validation_queries(
    rec,
    dataset: Dataset,
    held: pd.DataFrame,
    threshold: float,
    supports: tuple[int, ...],
    warm: tuple[float, ...] = (WARM_HISTORY,),
):
    """[(name, queries, positives)]: pseudo-cold users ("at_K": the K earliest interactions as support,
    later positives as targets) and the same users as warm ones ("warm": the first 80% as history;
    ``warm``: the fractions of the history to cut at, "warm_50" for 0.5)."""
    held_users = set(held["user_id"])
    profiles = {r["user_id"]: profile_of(r) for r in dataset.users.to_dict("records") if r["user_id"] in held_users}
    histories = [(user, history_of(group)) for user, group in held.groupby("user_id", sort=True)]
    out = []
    cuts = {f"at_{k}": k for k in supports} | {
        ("warm" if f == WARM_HISTORY else f"warm_{round(f * 100)}"): f for f in warm
    }
    for name, cut in cuts.items():
        queries, positives = [], []
        for user, history in histories:
            k = int(cut) if name.startswith("at_") else int(len(history) * cut)
            seen = {i for i, _, _ in history[:k]}
            later = [rec.item_row[i] for i, r, _ in history[k:] if r >= threshold and i not in seen]
            if later:
                queries.append(Query(user, profiles[user], history[:k]))
                positives.append(np.array(later))
        out.append((name, queries, positives))
    return out


def fusion_queries(rec, dataset: Dataset, held: pd.DataFrame, threshold: float, cfg: FinetuneConfig):
    """`validation_queries` at ``cfg.fusion_support`` and the ``cfg.fusion_warm_cuts``, the extra cuts
    ("warm_50", "warm_65") only where they leave more than 20 items, so the long-history buckets get more
    queries (docs/decisions/0004-fusion.md): the fusion's tuning queries."""
    from recsys_tasks.model.fusion import EDGES

    out = []
    for name, queries, targets in validation_queries(
        rec, dataset, held, threshold, tuple(cfg.fusion_support), tuple(cfg.fusion_warm_cuts)
    ):
        if name.startswith("warm_"):
            kept = [q_i for q_i, q in enumerate(queries) if len(q.history) > EDGES[2]]
            queries, targets = [queries[q_i] for q_i in kept], [targets[q_i] for q_i in kept]
        out.append((name, queries, targets))
    return out


def blocks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)``, ``size`` at a time (at least 1)."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def validate(rec, validation, block: int = 256) -> dict[str, float]:
    """NDCG@20 per validation part, scored ``block`` queries at a time; ``val_ndcg``, what finetune
    early-stops on: the cold parts' mean."""
    result = {}
    n_items = len(rec.item_ids)
    for name, queries, positives in validation:
        if not queries:
            continue
        ndcg = []
        for part in blocks(len(queries), block):
            scores = rec.score(queries[part])
            candidates = unseen(n_items, [rec._item_rows(q.history_items) for q in queries[part]])
            ndcg.append(ranking_metrics(scores, candidates, positives[part], 20, with_auc=False)["ndcg"])
        result[f"val_ndcg_{name}"] = float(np.nanmean(np.concatenate(ndcg)))
    cold = [v for k, v in result.items() if k.startswith("val_ndcg_at_")]
    result["val_ndcg"] = float(np.mean(cold)) if cold else 0.0
    return result


def unseen(n_items: int, seen: Sequence[np.ndarray]) -> np.ndarray:
    """Candidates (q, n_items) bool: every item but each query's own history rows."""
    candidates = np.ones((len(seen), n_items), bool)
    for q_i, rows in enumerate(seen):
        candidates[q_i, rows] = False
    return candidates

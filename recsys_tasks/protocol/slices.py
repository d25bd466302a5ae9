"""The evaluation slices of shared/EVALUATION.md, built from the saved split.

Each `Slice` holds the queries (what a ranker may see), the candidate mask, the positives
and the names of the baselines the protocol compares against on that slice. Interactions
are ordered by (timestamp, item_id) everywhere, the same tie-break as the split.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys_tasks.config import EvaluateConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.split import Split
from recsys_tasks.protocol.queries import Query, profile_of
from recsys_tasks.text.texts import taste_sentence

__all__ = ["BASELINES_BY_SLICE", "Slice", "build_slices", "stated_taste"]

log = logging.getLogger(__name__)

_DEMOGRAPHIC = ("popularity", "demographic_popularity")
BASELINES_BY_SLICE: dict[str, tuple[str, ...]] = {
    "cold-user@0": _DEMOGRAPHIC,
    "cold-user@K": _DEMOGRAPHIC + ("item_knn", "als"),  # any K > 0
    "cold-user@0+text": _DEMOGRAPHIC + ("genre_popularity",),
    "cold-item": ("random", "genre_profile", "text_profile"),
    "warm": ("popularity", "als"),
}


@dataclass(frozen=True, eq=False)
class Slice:
    """One row of the protocol's table: who is ranked, over what, against which baselines."""

    name: str
    queries: tuple[Query, ...]
    candidates: np.ndarray  # bool, (n_queries, n_items) or (n_items,) shared by all queries
    positives: tuple[np.ndarray, ...]  # item row indices (dataset.items order), one array per query
    baselines: tuple[str, ...]

    @property
    def n_users(self) -> int:
        return len(self.queries)

    @property
    def is_cold(self) -> bool:
        return self.name.startswith("cold-")

    def rows(self, start: int, stop: int) -> tuple[list[Query], np.ndarray, list[np.ndarray]]:
        """Queries, candidate mask and positives of rows [start, stop), for chunked scoring."""
        cand = self.candidates if self.candidates.ndim == 1 else self.candidates[start:stop]
        return list(self.queries[start:stop]), cand, list(self.positives[start:stop])


def build_slices(dataset: Dataset, split: Split, cfg: EvaluateConfig, positive_threshold: float) -> list[Slice]:
    """Every slice of the protocol, in report order; [] when the split holds nothing out."""
    if not split.holdout:
        return []
    ctx = _Context(dataset, split, positive_threshold)
    slices = [_cold_user(ctx, k) for k in cfg.support_sizes]
    slices += [_cold_user_text(ctx), _cold_item(ctx), _warm(ctx)]
    for s in slices:
        if not s.n_users:
            log.warning("slice %s has no users; left out", s.name)
    return [s for s in slices if s.n_users]


def stated_taste(genres: Sequence[list[str]]) -> str | None:
    """The sentence "I like G1 and G2 movies." from the genre lists of a user's positives.

    Most frequent genres first, ties by name; one genre if only one occurs, None if none does.
    """
    counts = Counter(g for item_genres in genres for g in item_genres if g)
    top = [g for g, _ in sorted(counts.items(), key=lambda gc: (-gc[1], gc[0]))[:2]]
    return taste_sentence(top) if top else None


class _Context:
    """Lookups shared by the slice builders: item rows, genres, profiles, per-user histories."""

    def __init__(self, dataset: Dataset, split: Split, threshold: float) -> None:
        self.item_ids = dataset.items["item_id"].astype(str).to_numpy()
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.n_items = len(self.item_ids)
        self.genres = dataset.genre_lists()
        self.threshold = threshold
        self.cold_items = set(split.cold_items)
        self.profiles = {str(r["user_id"]): profile_of(r) for r in dataset.users.to_dict("records")}
        self.histories = _histories(split.interactions)

    def users(self, part: str) -> list[str]:
        return sorted(self.histories.get(part, {}))

    def history(self, part: str, user: str) -> tuple[tuple[str, float, int], ...]:
        return self.histories.get(part, {}).get(user, ())

    def query(self, user: str, history: tuple[tuple[str, float, int], ...], text: str | None = None) -> Query:
        return Query(user, dict(self.profiles.get(user, profile_of(None))), history, text)

    def rows_of(self, items: Sequence[str]) -> np.ndarray:
        return np.unique(np.array([self.index[i] for i in items if i in self.index], dtype=np.int64))

    def positives(self, history: Sequence[tuple[str, float, int]]) -> np.ndarray:
        return self.rows_of([item for item, rating, _ in history if rating >= self.threshold])


def _histories(interactions: pd.DataFrame) -> dict[str, dict[str, tuple[tuple[str, float, int], ...]]]:
    """part -> user -> (item_id, rating, timestamp) tuples, oldest first (one sort for all users)."""
    inter = interactions.sort_values(["part", "user_id", "timestamp", "item_id"], kind="stable")
    parts, users = inter["part"].astype(str).to_numpy(), inter["user_id"].astype(str).to_numpy()
    records = zip(
        inter["item_id"].astype(str).tolist(),
        inter["rating"].astype(float).tolist(),
        inter["timestamp"].astype("int64").tolist(),
    )
    out: dict[str, dict[str, list[tuple[str, float, int]]]] = {}
    for part, user, record in zip(parts, users, records):
        out.setdefault(part, {}).setdefault(user, []).append(record)
    return {part: {user: tuple(h) for user, h in by_user.items()} for part, by_user in out.items()}


def _cold_user(ctx: _Context, k: int) -> Slice:
    queries, masks, positives = [], [], []
    for user in ctx.users("cold_user"):
        full = ctx.history("cold_user", user)
        support, later = full[:k], full[k:]
        mask = np.ones(ctx.n_items, dtype=bool)
        mask[ctx.rows_of([item for item, _, _ in support])] = False
        pos = ctx.positives(later)
        pos = pos[mask[pos]]  # a support item rated again later is not a new positive
        if not len(pos):
            continue
        queries.append(ctx.query(user, support))
        masks.append(mask)
        positives.append(pos)
    baselines = BASELINES_BY_SLICE["cold-user@0" if k == 0 else "cold-user@K"]
    return _slice(f"cold-user@{k}", queries, _stack(masks, ctx.n_items), positives, baselines)


def _cold_user_text(ctx: _Context) -> Slice:
    queries, positives = [], []
    for user in ctx.users("cold_user"):
        pos = ctx.positives(ctx.history("cold_user", user))
        if not len(pos):
            continue
        queries.append(ctx.query(user, (), stated_taste([ctx.genres[i] for i in pos])))
        positives.append(pos)
    return _slice(
        "cold-user@0+text", queries, np.ones(ctx.n_items, dtype=bool), positives, BASELINES_BY_SLICE["cold-user@0+text"]
    )


def _cold_item(ctx: _Context) -> Slice:
    candidates = np.zeros(ctx.n_items, dtype=bool)
    candidates[ctx.rows_of(sorted(ctx.cold_items))] = True
    queries, positives = [], []
    for user in ctx.users("cold_item"):
        pos = ctx.positives(ctx.history("cold_item", user))
        pos = pos[candidates[pos]]
        if not len(pos):
            continue
        queries.append(ctx.query(user, ctx.history("train", user)))
        positives.append(pos)
    return _slice("cold-item", queries, candidates, positives, BASELINES_BY_SLICE["cold-item"])


def _warm(ctx: _Context) -> Slice:
    queries, masks, positives = [], [], []
    for user in ctx.users("warm_test"):
        pos = ctx.positives(ctx.history("warm_test", user))
        history = ctx.history("train", user)
        mask = np.ones(ctx.n_items, dtype=bool)
        mask[ctx.rows_of([item for item, _, _ in history])] = False
        pos = pos[mask[pos]]  # an item re-rated after training is not a new positive
        if not len(pos):
            continue
        queries.append(ctx.query(user, history))
        masks.append(mask)
        positives.append(pos)
    return _slice("warm", queries, _stack(masks, ctx.n_items), positives, BASELINES_BY_SLICE["warm"])


def _stack(masks: list[np.ndarray], n_items: int) -> np.ndarray:
    return np.stack(masks) if masks else np.zeros((0, n_items), dtype=bool)


def _slice(
    name: str, queries: list[Query], candidates: np.ndarray, positives: list[np.ndarray], baselines: tuple[str, ...]
) -> Slice:
    return Slice(name, tuple(queries), candidates, tuple(positives), tuple(baselines))

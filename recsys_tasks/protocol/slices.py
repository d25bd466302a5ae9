"""The evaluation slices of shared/EVALUATION.md, built from the saved split.

Each `Slice` holds the queries (what a ranker may see), the items it ranks (shared by all its
queries) and, per query, the items taken out of that query's candidates (its support or its
training history), the positives and the names of the baselines the protocol compares against
on that slice. A query's candidate mask is built only for the chunk being scored (`Slice.rows`),
so memory stays at chunk x items whatever the number of users. Past ``max_users`` qualifying
users a slice keeps a seeded sample of them (the same for every ranker), and says how many it had.
Interactions are ordered by (timestamp, item_id) everywhere, the same tie-break as the split.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys_tasks.config import EvaluateConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.split import Split
from recsys_tasks.protocol.queries import Query, profile_of
from recsys_tasks.text.texts import stated_taste

__all__ = ["BASELINES_BY_SLICE", "Slice", "build_slices", "sample_rows"]

log = logging.getLogger(__name__)

_DEMOGRAPHIC = ("popularity", "demographic_popularity")
BASELINES_BY_SLICE: dict[str, tuple[str, ...]] = {
    "cold-user@0": _DEMOGRAPHIC,
    "cold-user@K": _DEMOGRAPHIC + ("item_knn", "als"),  # any K > 0
    "cold-user@0+text": _DEMOGRAPHIC + ("genre_popularity",),
    "cold-item": ("random", "genre_profile", "text_profile"),
    "warm": ("popularity", "als"),
}
_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Slice:
    """One row of the protocol's table: who is ranked, over what, against which baselines."""

    name: str
    queries: tuple[Query, ...]
    candidates: np.ndarray  # bool (n_items,): the items ranked for every query, before its exclusions
    positives: tuple[np.ndarray, ...]  # item row indices (dataset.items order), one array per query
    baselines: tuple[str, ...]
    excluded: tuple[np.ndarray, ...] = ()  # per query, item rows taken out of its candidates; (): none
    population: int | None = None  # users in the slice before sampling; None: every one is in `queries`

    def __post_init__(self) -> None:
        if self.candidates.ndim != 1:
            raise ValueError(f"slice {self.name}: candidates must be one (n_items,) mask, got {self.candidates.shape}")
        if len(self.positives) != len(self.queries) or (self.excluded and len(self.excluded) != len(self.queries)):
            raise ValueError(f"slice {self.name}: queries, positives and exclusions differ in length")

    @property
    def n_users(self) -> int:
        """Users evaluated (the sample, where the slice was sampled)."""
        return len(self.queries)

    @property
    def n_population(self) -> int:
        """Users in the slice, evaluated or not."""
        return self.n_users if self.population is None else self.population

    @property
    def n_items(self) -> int:
        return len(self.candidates)

    @property
    def is_cold(self) -> bool:
        return self.name.startswith("cold-")

    def rows(self, start: int, stop: int) -> tuple[list[Query], np.ndarray, list[np.ndarray]]:
        """Queries, candidate mask and positives of rows [start, stop), for chunked scoring.

        The mask is (n_items,) when no query excludes anything, else (rows, n_items) built for these rows only.
        """
        queries, positives = list(self.queries[start:stop]), list(self.positives[start:stop])
        if not self.excluded:
            return queries, self.candidates, positives
        return queries, _chunk_mask(self.candidates, self.excluded[start:stop]), positives


def build_slices(dataset: Dataset, split: Split, cfg: EvaluateConfig, positive_threshold: float) -> list[Slice]:
    """Every slice of the protocol, in report order; [] when the split holds nothing out."""
    if not split.holdout:
        return []
    ctx = _Context(dataset, split, positive_threshold, cfg.max_users, cfg.seed)
    slices = [_cold_user(ctx, k) for k in cfg.support_sizes]
    slices += [_cold_user_text(ctx), _cold_item(ctx), _warm(ctx)]
    for s in slices:
        if not s.n_users:
            log.warning("slice %s has no users; left out", s.name)
        elif s.n_users < s.n_population:
            log.info("slice %s: a seeded sample of %d of its %d users", s.name, s.n_users, s.n_population)
    return [s for s in slices if s.n_users]


def sample_rows(n: int, max_users: int, seed: int, name: str) -> np.ndarray:
    """The rows of a slice's ``n`` users it evaluates: all of them up to ``max_users``, else a seeded sample.

    Seeded by (seed, slice name), so every ranker of a run, and every run with that seed, sees the same users.
    """
    if n <= max_users:
        return np.arange(n)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return np.sort(rng.choice(n, size=max_users, replace=False))


class _Context:
    """The split as arrays sorted by (part, user, timestamp, item id), one sort for every slice, and lookups."""

    def __init__(self, dataset: Dataset, split: Split, threshold: float, max_users: int, seed: int) -> None:
        self.item_ids = dataset.items["item_id"].astype(str).to_numpy()
        self.n_items = len(self.item_ids)
        self.genres = dataset.genre_lists()
        self.cold_items = np.zeros(self.n_items, dtype=bool)
        found = pd.Index(self.item_ids).get_indexer([str(item) for item in split.cold_items])
        self.cold_items[found[found >= 0]] = True
        self.max_users, self.seed = max_users, seed
        self._groups: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._user_row = {str(u): i for i, u in enumerate(dataset.users["user_id"].tolist())}
        self._user_columns = {c: dataset.users[c].to_numpy(dtype=object) for c in dataset.users.columns}
        self._sort(split.interactions, threshold)

    def _sort(self, inter: pd.DataFrame, threshold: float) -> None:
        """Codes for users, items and parts, and the order every slice reads them in."""
        user_codes, users = _ranked_codes(inter["user_id"])
        item_codes, items = _ranked_codes(inter["item_id"])
        part_codes, parts = _ranked_codes(inter["part"])
        timestamps = inter["timestamp"].to_numpy(dtype=np.int64)
        order = np.lexsort((item_codes, timestamps, user_codes, part_codes))
        self.users, self.items = users, items
        self.user = user_codes[order]
        self.item = item_codes[order]
        self.row = pd.Index(self.item_ids).get_indexer(items).astype(np.int32)[self.item]  # -1: not in the items
        self.rating = inter["rating"].to_numpy(dtype=np.float64)[order]
        self.timestamp = timestamps[order]
        self.liked = (self.rating >= threshold) & (self.row >= 0)
        sorted_parts = part_codes[order]
        self.bounds = {
            str(p): (int(np.searchsorted(sorted_parts, c, "left")), int(np.searchsorted(sorted_parts, c, "right")))
            for c, p in enumerate(parts)
        }

    def groups(self, part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The users of a part (codes, in user id order) and each one's [start, stop) in the sorted arrays."""
        lo, hi = self.bounds.get(part, (0, 0))
        users = self.user[lo:hi]
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) + lo if hi > lo else _EMPTY
        stops = np.r_[starts[1:], hi].astype(np.int64) if len(starts) else _EMPTY
        return users[starts - lo] if len(starts) else _EMPTY, starts, stops

    def span(self, part: str, user: int) -> tuple[int, int]:
        """[start, stop) of one user's interactions in a part (empty where the user has none)."""
        if part not in self._groups:
            self._groups[part] = self.groups(part)
        users, starts, stops = self._groups[part]
        at = int(np.searchsorted(users, np.asarray(user, dtype=users.dtype)))
        return (int(starts[at]), int(stops[at])) if at < len(users) and users[at] == user else (0, 0)

    def history(self, start: int, stop: int) -> tuple[tuple[str, float, int], ...]:
        """(item_id, rating, timestamp) tuples of sorted rows [start, stop), oldest first."""
        return tuple(
            zip(
                self.items[self.item[start:stop]].tolist(),
                self.rating[start:stop].tolist(),
                self.timestamp[start:stop].tolist(),
            )
        )

    def item_rows(self, start: int, stop: int) -> np.ndarray:
        """The sorted, distinct item rows of sorted rows [start, stop) (unknown items dropped)."""
        rows = self.row[start:stop]
        return _distinct(rows[rows >= 0])

    def liked_rows(self, start: int, stop: int) -> np.ndarray:
        """The sorted, distinct item rows rated at or above the threshold in sorted rows [start, stop)."""
        return _distinct(self.row[start:stop][self.liked[start:stop]])

    def query(self, user: int, history: tuple[tuple[str, float, int], ...], text: str | None = None) -> Query:
        user_id = str(self.users[user])
        row = self._user_row.get(user_id)
        record = None if row is None else {c: values[row] for c, values in self._user_columns.items()}
        return Query(user_id, profile_of(record), history, text)

    def sample(self, n: int, name: str) -> np.ndarray:
        return sample_rows(n, self.max_users, self.seed, name)


def _ranked_codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes that sort as the values' strings do, and those strings (code -> value)."""
    codes, uniques = pd.factorize(column)
    names = np.asarray(pd.Index(uniques).astype(str), dtype=object)
    order = np.argsort(names, kind="stable")
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order))
    return rank[codes], names[order]


def _distinct(rows: np.ndarray) -> np.ndarray:
    """Sorted distinct int64 values (np.unique's result, cheaper on the short arrays of one user)."""
    rows = np.sort(rows.astype(np.int64))
    return rows[np.r_[True, rows[1:] != rows[:-1]]] if len(rows) else rows


def _chunk_mask(candidates: np.ndarray, excluded: Sequence[np.ndarray]) -> np.ndarray:
    """(len(excluded), n_items) candidate masks: the shared candidates less each row's exclusions."""
    mask = np.repeat(candidates[None, :], len(excluded), axis=0)
    lengths = np.fromiter((len(e) for e in excluded), dtype=np.int64, count=len(excluded))
    if lengths.sum():
        mask[np.repeat(np.arange(len(excluded)), lengths), np.concatenate(excluded)] = False
    return mask


def _cold_user(ctx: _Context, k: int) -> Slice:
    users, starts, stops = ctx.groups("cold_user")
    kept, supports, positives = [], [], []
    for user, start, stop in zip(users, starts, stops):
        cut = min(start + k, stop)
        support = ctx.item_rows(start, cut)
        pos = ctx.liked_rows(cut, stop)
        pos = pos[~_member(pos, support)]  # a support item rated again later is not new
        if len(pos):
            kept.append((user, start, cut))
            supports.append(support)
            positives.append(pos)
    name = f"cold-user@{k}"
    rows = ctx.sample(len(kept), name)
    queries = [ctx.query(int(kept[r][0]), ctx.history(kept[r][1], kept[r][2])) for r in rows]
    baselines = BASELINES_BY_SLICE["cold-user@0" if k == 0 else "cold-user@K"]
    everything = np.ones(ctx.n_items, dtype=bool)
    excluded = tuple(supports[r] for r in rows) if k else ()
    return Slice(name, tuple(queries), everything, tuple(positives[r] for r in rows), baselines, excluded, len(kept))


def _cold_user_text(ctx: _Context) -> Slice:
    users, starts, stops = ctx.groups("cold_user")
    kept = [(int(u), ctx.liked_rows(a, b)) for u, a, b in zip(users, starts, stops)]
    kept = [(u, pos) for u, pos in kept if len(pos)]
    rows = ctx.sample(len(kept), "cold-user@0+text")
    queries = [ctx.query(kept[r][0], (), stated_taste([ctx.genres[i] for i in kept[r][1]])) for r in rows]
    return Slice(
        "cold-user@0+text",
        tuple(queries),
        np.ones(ctx.n_items, dtype=bool),
        tuple(kept[r][1] for r in rows),
        BASELINES_BY_SLICE["cold-user@0+text"],
        population=len(kept),
    )


def _cold_item(ctx: _Context) -> Slice:
    users, starts, stops = ctx.groups("cold_item")
    kept = []
    for user, start, stop in zip(users, starts, stops):
        pos = ctx.liked_rows(start, stop)
        pos = pos[ctx.cold_items[pos]]
        if len(pos):
            kept.append((int(user), pos))
    rows = ctx.sample(len(kept), "cold-item")
    queries = [ctx.query(kept[r][0], ctx.history(*ctx.span("train", kept[r][0]))) for r in rows]
    return Slice(
        "cold-item",
        tuple(queries),
        ctx.cold_items.copy(),
        tuple(kept[r][1] for r in rows),
        BASELINES_BY_SLICE["cold-item"],
        population=len(kept),
    )


def _warm(ctx: _Context) -> Slice:
    users, positives = _new_positives(ctx, "warm_test", "train")
    rows = ctx.sample(len(users), "warm")
    queries, excluded = [], []
    for r in rows:
        start, stop = ctx.span("train", int(users[r]))
        queries.append(ctx.query(int(users[r]), ctx.history(start, stop)))
        excluded.append(ctx.item_rows(start, stop))
    return Slice(
        "warm",
        tuple(queries),
        np.ones(ctx.n_items, dtype=bool),
        tuple(positives[r] for r in rows),
        BASELINES_BY_SLICE["warm"],
        tuple(excluded),
        len(users),
    )


def _new_positives(ctx: _Context, part: str, seen: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Users of ``part`` with a liked item not among their ``seen`` items, and those items (all users at once)."""
    lo, hi = ctx.bounds.get(part, (0, 0))
    liked = np.flatnonzero(ctx.liked[lo:hi]) + lo
    keys = _distinct(ctx.user[liked].astype(np.int64) * ctx.n_items + ctx.row[liked])
    s_lo, s_hi = ctx.bounds.get(seen, (0, 0))
    known = ctx.row[s_lo:s_hi] >= 0
    seen_keys = ctx.user[s_lo:s_hi][known].astype(np.int64) * ctx.n_items + ctx.row[s_lo:s_hi][known]
    keys = keys[~_member(keys, _distinct(seen_keys))]  # an item re-rated after training is not a new positive
    users, first = np.unique(keys // ctx.n_items, return_index=True)
    return users, np.split((keys % ctx.n_items).astype(np.int64), first[1:])


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Whether each value is in ``sorted_set`` (sorted, distinct), by binary search."""
    if not len(sorted_set):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values

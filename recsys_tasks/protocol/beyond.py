"""Beyond-accuracy metrics of top-k lists: catalogue coverage, novelty, genre diversity, popularity bias.

Everything is read from the recommended lists alone (``top_rows``: one row of item indices per query,
best first; a negative index is an empty slot, for a query with fewer than k candidates), the training
popularity of each item and, for diversity, each item's genres. Evaluation scores users in blocks, so
`BeyondAccuracy` accumulates one block at a time (a boolean array over the items for coverage, running
sums for the rest): memory O(items + block), and any split into blocks gives the one-shot result.

- coverage@k: distinct items in any list / items in the catalogue (``len(train_popularity)``).
- novelty@k: per list, the mean self-information -log2 p(i) of its items, p(i) the item's share of the
  training interactions, add-one smoothed ((count + 1) / (total + n_items)) so an item never seen in
  training (a cold item) has the largest finite value; then the mean over lists.
- diversity@k: per list, the mean over its pairs of items of 1 - Jaccard(genre sets) (two items without
  any genre count as alike, dissimilarity 0); then the mean over lists with at least two items.
- pop_share@k: per list, the share of its items among the head, the ceil(10%) of the catalogue with the
  most training interactions (ties by item index; items never seen in training are never head); then
  the mean over lists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["BEYOND_METRICS", "HEAD_SHARE", "BeyondAccuracy", "beyond_accuracy", "genre_matrix", "training_popularity"]

BEYOND_METRICS = ("coverage", "novelty", "diversity", "pop_share")
HEAD_SHARE = 0.10  # the popular head: this share of the catalogue, most training interactions first


def beyond_accuracy(
    top_rows: np.ndarray, train_popularity: np.ndarray, item_genres: sp.spmatrix | np.ndarray | None = None
) -> dict[str, float]:
    """{"coverage@k", "novelty@k", "diversity@k", "pop_share@k"} of one set of top-k lists (k = columns).

    ``top_rows``: (n_queries, k) int item indices, best first, negative for an empty slot;
    ``train_popularity``: (n_items,) training interaction counts; ``item_genres``: (n_items, n_genres)
    0/1 matrix (scipy.sparse or ndarray), or None (diversity is then NaN).
    """
    top_rows = np.asarray(top_rows)
    if top_rows.ndim != 2:
        raise ValueError(f"top_rows must be (n_queries, k), got shape {top_rows.shape}")
    acc = BeyondAccuracy(train_popularity, item_genres, top_rows.shape[1])
    acc.add(top_rows)
    return acc.result()


class BeyondAccuracy:
    """Running beyond-accuracy sums over blocks of top-k lists; `result` gives `beyond_accuracy`'s dict."""

    def __init__(
        self, train_popularity: np.ndarray, item_genres: sp.spmatrix | np.ndarray | None = None, k: int = 20
    ) -> None:
        counts = np.asarray(train_popularity, dtype=np.float64)
        if counts.ndim != 1 or not len(counts):
            raise ValueError(f"train_popularity must be a non-empty (n_items,) array, got shape {counts.shape}")
        if not np.isfinite(counts).all() or (counts < 0).any():
            bad = int(np.flatnonzero(~np.isfinite(counts) | (counts < 0))[0])
            raise ValueError(f"train_popularity must be finite and >= 0; item {bad} has {counts[bad]}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k, self.n_items = int(k), len(counts)
        # Add-one smoothing: an item never seen in training has a finite self-information, the largest.
        self.information = -np.log2((counts + 1.0) / (counts.sum() + self.n_items))
        n_head = math.ceil(HEAD_SHARE * self.n_items)
        head = np.argsort(-counts, kind="stable")[:n_head]
        self.head = np.zeros(self.n_items, dtype=bool)
        self.head[head[counts[head] > 0]] = True
        self.genres = None if item_genres is None else _bool_csr(item_genres, self.n_items)
        self.covered = np.zeros(self.n_items, dtype=bool)
        self.lists = 0  # lists with at least one item
        self.novelty_sum = self.pop_sum = self.diversity_sum = 0.0
        self.diverse_lists = 0  # lists with at least two items (one pair)

    def add(self, top_rows: np.ndarray) -> None:
        """Fold in one block of (n_queries, k) top-k lists (negative entries: empty slots)."""
        top = np.asarray(top_rows)
        if top.ndim != 2 or top.shape[1] != self.k:
            raise ValueError(f"top_rows must be (n_queries, {self.k}), got shape {top.shape}")
        if not np.issubdtype(top.dtype, np.integer):
            raise ValueError(f"top_rows must hold integer item indices, got dtype {top.dtype}")
        if top.size and top.max() >= self.n_items:
            raise ValueError(f"top_rows holds item {int(top.max())}, outside the {self.n_items}-item catalogue")
        filled = top >= 0
        items = np.where(filled, top, 0).astype(np.int64)
        sizes = filled.sum(axis=1)
        self.covered[items[filled]] = True
        listed = sizes > 0
        self.lists += int(listed.sum())
        per_list = sizes[listed]  # every listed row has at least one item
        self.novelty_sum += float((np.where(filled, self.information[items], 0.0)[listed].sum(axis=1) / per_list).sum())
        self.pop_sum += float((np.where(filled, self.head[items], False)[listed].sum(axis=1) / per_list).sum())
        if self.genres is not None and len(top):
            per_list = _mean_dissimilarity(self.genres, items, filled)
            paired = sizes >= 2
            self.diversity_sum += float(per_list[paired].sum())
            self.diverse_lists += int(paired.sum())

    def result(self) -> dict[str, float]:
        """The metrics so far (NaN where no list had the items a metric needs; coverage 0 before any)."""
        k, nan = self.k, math.nan
        return {
            f"coverage@{k}": float(self.covered.sum() / self.n_items),
            f"novelty@{k}": self.novelty_sum / self.lists if self.lists else nan,
            f"diversity@{k}": self.diversity_sum / self.diverse_lists if self.diverse_lists else nan,
            f"pop_share@{k}": self.pop_sum / self.lists if self.lists else nan,
        }


def training_popularity(item_ids: Sequence[str], train: pd.DataFrame) -> np.ndarray:
    """(n_items,) training interactions per item (any rating), in ``item_ids`` order; unknown items dropped."""
    rows = pd.Index([str(i) for i in item_ids]).get_indexer(train["item_id"].astype(str))
    return np.bincount(rows[rows >= 0], minlength=len(item_ids)).astype(np.float64)


def genre_matrix(genre_lists: Sequence[Sequence[str]]) -> sp.csr_matrix:
    """Boolean (n_items, n_genres) CSR matrix of each item's genres (sorted vocabulary; "" ignored)."""
    vocabulary = sorted({g for genres in genre_lists for g in genres if g})
    column = {g: c for c, g in enumerate(vocabulary)}
    cells = [(row, column[g]) for row, genres in enumerate(genre_lists) for g in set(genres) if g]
    rows, cols = (np.array(v, dtype=np.int64) for v in zip(*cells)) if cells else (np.zeros(0, np.int64),) * 2
    return sp.csr_matrix((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(len(genre_lists), len(vocabulary)))


# ---------------------------------------------------------------------------- helpers
def _bool_csr(matrix: sp.spmatrix | np.ndarray, n_items: int) -> sp.csr_matrix:
    genres = sp.csr_matrix(matrix)
    if genres.ndim != 2 or genres.shape[0] != n_items:
        raise ValueError(f"item_genres has shape {genres.shape}; expected ({n_items}, n_genres), one row per item")
    return (genres != 0).astype(bool).tocsr()


def _mean_dissimilarity(genres: sp.csr_matrix, items: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Per list, the mean over its pairs of filled slots of 1 - Jaccard of the two items' genre sets (NaN: < 2)."""
    n, k = items.shape
    g = genres[items.ravel()].toarray().astype(np.float32).reshape(n, k, genres.shape[1])  # O(block)
    g *= filled[:, :, None]
    inter = g @ g.transpose(0, 2, 1)  # (block, k, k) shared genres
    size = g.sum(axis=2)
    union = size[:, :, None] + size[:, None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        dissimilar = np.where(union > 0, 1.0 - inter / union, 0.0)  # no genre on either side: alike
    pair = np.triu(np.ones((k, k), dtype=bool), 1)[None] & filled[:, :, None] & filled[:, None, :]
    pairs = pair.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, (dissimilar * pair).sum(axis=(1, 2)) / pairs, np.nan)

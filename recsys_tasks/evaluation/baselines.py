"""The protocol's baselines, each a small `Scorer` fit on the training part only (plus content).

Every scorer ranks the full catalog in ``dataset.items`` row order. Interaction matrices are
binary (a user rated an item, any rating); popularity counts positives. Items absent from
training (the cold items) get no collaborative signal: zero counts, zero similarity, zero
ALS factors, so only content baselines can rank them.
"""

from __future__ import annotations

import re
import warnings
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_tasks.config import EvaluateConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.split import Split
from recsys_tasks.model.popularity import DemographicPopularity
from recsys_tasks.protocol.queries import Query, Scorer

__all__ = [
    "ALSFoldIn",
    "DemographicPopularity",
    "GenreProfile",
    "GenrePopularity",
    "ItemKNN",
    "Popularity",
    "RandomScorer",
    "TextProfile",
    "baselines_for",
    "parse_genres",
]


class Popularity:
    """Count of training positives per item, the same ranking for everyone."""

    name = "popularity"

    def __init__(self, item_ids: Sequence[str], train: pd.DataFrame, positive_threshold: float = 4.0) -> None:
        self.counts = _positive_counts(train, _index(item_ids), positive_threshold)

    def score(self, queries: Sequence[Query]) -> np.ndarray:
        return np.tile(self.counts.astype(np.float32), (len(queries), 1))


class ItemKNN:
    """Sum of cosine similarities (training co-occurrence) between each item and the history.

    implicit's item-item model (`CosineRecommender`) keeps each item's ``neighbours`` most similar
    items (None: every item, the exact sum); an item is not its own neighbour.
    """

    name = "item_knn"

    def __init__(self, item_ids: Sequence[str], train: pd.DataFrame, neighbours: int | None = None) -> None:
        from implicit.nearest_neighbours import CosineRecommender
        from implicit.utils import ParameterWarning

        if neighbours is not None and neighbours < 1:
            raise ValueError(f"neighbours must be at least 1 (or None: every item), got {neighbours}")
        self.index = _index(item_ids)
        matrix, _ = _train_matrix(train, self.index)  # (n_train_users, n_items) binary
        # K counts the item itself, which is dropped below: one more than the neighbours kept.
        k = len(self.index) if neighbours is None else min(neighbours + 1, len(self.index))
        model = CosineRecommender(K=max(k, 1), num_threads=1)
        with warnings.catch_warnings():  # implicit hands its own normalised COO matrix on and warns about it
            warnings.simplefilter("ignore", ParameterWarning)
            model.fit(matrix, show_progress=False)
        similarity = model.similarity.tocsr().astype(np.float32)  # (n_items, n_items), at most K per row
        similarity.setdiag(0.0)
        similarity.eliminate_zeros()
        self.similarity = similarity

    def score(self, queries: Sequence[Query]) -> np.ndarray:
        return np.asarray((_history_matrix(queries, self.index) @ self.similarity).todense(), dtype=np.float32)


class ALSFoldIn:
    """Implicit ALS fit on the binary training matrix.

    A training user whose query history is exactly their training history is scored with
    their fitted factors (the warm slice); anyone else is folded in from their history with
    ``recalculate_user`` (a least-squares solve against the fixed item factors). An empty
    history scores zeros.
    """

    name = "als"

    def __init__(
        self,
        item_ids: Sequence[str],
        train: pd.DataFrame,
        factors: int = 64,
        iterations: int = 15,
        regularization: float = 0.05,
        seed: int = 42,
        alpha: float = 1.0,
    ) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        self.index = _index(item_ids)
        matrix, users = _train_matrix(train, self.index)
        with threadpool_limits(1, "blas"):  # implicit runs its own threads; BLAS threads only oversubscribe
            self.model = AlternatingLeastSquares(
                factors=factors, regularization=regularization, alpha=alpha, iterations=iterations, random_state=seed
            )
            self.model.fit(matrix, show_progress=False)
        self.user_row = {user: row for row, user in enumerate(users)}
        self.train = matrix  # each row's sorted item columns tell whether a query's history is the training one

    def factors_for(self, queries: Sequence[Query]) -> np.ndarray:
        """(n_queries, factors): fitted factors for unchanged training users, fold-in otherwise."""
        history = _history_matrix(queries, self.index)
        out = np.zeros((len(queries), self.model.factors), dtype=np.float32)
        fold = []
        for row, query in enumerate(queries):
            items = history.indices[history.indptr[row] : history.indptr[row + 1]]
            if query.user_id in self.user_row and np.array_equal(items, self._train_items(query.user_id)):
                out[row] = self.model.user_factors[self.user_row[query.user_id]]
            elif len(items):
                fold.append(row)
        if fold:
            out[fold] = self.model.recalculate_user(np.arange(len(fold)), history[fold])
        return out

    def score(self, queries: Sequence[Query]) -> np.ndarray:
        return (self.factors_for(queries) @ self.model.item_factors.T).astype(np.float32)

    def _train_items(self, user: str) -> np.ndarray:
        """A training user's item columns, sorted (the training matrix keeps its indices sorted)."""
        row = self.user_row[user]
        return self.train.indices[self.train.indptr[row] : self.train.indptr[row + 1]]


class GenrePopularity:
    """Popularity, with every item of a genre named in the stated taste ranked above the rest."""

    name = "genre_popularity"

    def __init__(
        self,
        item_ids: Sequence[str],
        train: pd.DataFrame,
        genre_lists: Sequence[list[str]],
        positive_threshold: float = 4.0,
    ) -> None:
        self.counts = _positive_counts(train, _index(item_ids), positive_threshold).astype(np.float32)
        self.vocabulary, self.genres = _genre_matrix(genre_lists)

    def score(self, queries: Sequence[Query]) -> np.ndarray:
        out = np.tile(self.counts, (len(queries), 1))
        boost = self.counts.max(initial=0.0) + 1.0  # lifts any stated-genre item above all others
        column = {g: c for c, g in enumerate(self.vocabulary)}
        for row, query in enumerate(queries):
            stated = [column[g] for g in parse_genres(query.text, self.vocabulary)]
            if stated:
                out[row] += boost * (self.genres[:, stated].sum(axis=1) > 0)
        return out


class RandomScorer:
    """Uniform random scores, seeded per (seed, user id) so chunking never changes them."""

    name = "random"

    def __init__(self, n_items: int, seed: int = 42) -> None:
        self.n_items, self.seed = n_items, seed

    def score(self, queries: Sequence[Query]) -> np.ndarray:
        out = np.zeros((len(queries), self.n_items), dtype=np.float32)
        for row, query in enumerate(queries):
            out[row] = np.random.default_rng([self.seed, zlib.crc32(query.user_id.encode())]).random(self.n_items)
        return out


class GenreProfile:
    """Cosine between the histogram of the history's genres and each item's genre vector."""

    name = "genre_profile"

    def __init__(self, item_ids: Sequence[str], genre_lists: Sequence[list[str]]) -> None:
        self.index = _index(item_ids)
        _, self.genres = _genre_matrix(genre_lists)

    def score(self, queries: Sequence[Query]) -> np.ndarray:
        profile = np.asarray(_history_matrix(queries, self.index) @ self.genres)  # (n_queries, n_genres) counts
        return (_unit_rows(profile) @ _unit_rows(self.genres).T).astype(np.float32)


class TextProfile:
    """Cosine between the mean text embedding of the history items and each item's embedding."""

    name = "text_profile"

    def __init__(self, item_ids: Sequence[str], item_text: np.ndarray) -> None:
        self.index = _index(item_ids)
        if item_text.shape[0] != len(self.index):
            raise ValueError(f"item_text has {item_text.shape[0]} rows for {len(self.index)} items")
        self.embeddings = _unit_rows(np.asarray(item_text, dtype=np.float32))

    def score(self, queries: Sequence[Query]) -> np.ndarray:
        history = _history_matrix(queries, self.index)
        counts = np.asarray(history.sum(axis=1)).reshape(-1, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nan_to_num(np.asarray(history @ self.embeddings) / counts)
        return (_unit_rows(mean) @ self.embeddings.T).astype(np.float32)


def baselines_for(
    dataset: Dataset, split: Split, cfg: EvaluateConfig, item_text: np.ndarray | None, positive_threshold: float = 4.0
) -> dict[str, Scorer]:
    """Fit every baseline once on ``split.train``; text_profile only when embeddings are given."""
    item_ids = dataset.items["item_id"].astype(str).tolist()
    train, genres = split.train, dataset.genre_lists()
    scorers: list[Scorer] = [
        Popularity(item_ids, train, positive_threshold),
        DemographicPopularity(item_ids, train, dataset.users, positive_threshold, cfg.demographic_min_group),
        ItemKNN(item_ids, train, cfg.item_knn_neighbours or None),
        ALSFoldIn(item_ids, train, cfg.als_factors, cfg.als_iterations, cfg.als_regularization, cfg.seed),
        GenrePopularity(item_ids, train, genres, positive_threshold),
        RandomScorer(len(item_ids), cfg.seed),
        GenreProfile(item_ids, genres),
    ]
    if item_text is not None:
        scorers.append(TextProfile(item_ids, item_text))
    return {s.name: s for s in scorers}


def parse_genres(text: str | None, vocabulary: Sequence[str]) -> list[str]:
    """Vocabulary genres named in free text (case-insensitive, whole words), in vocabulary order."""
    if not text:
        return []
    return [g for g in vocabulary if re.search(rf"(?<![0-9a-z]){re.escape(g.lower())}(?![0-9a-z])", text.lower())]


# ---------------------------------------------------------------------------- helpers
def _index(item_ids: Sequence[str]) -> dict[str, int]:
    return {str(item): row for row, item in enumerate(item_ids)}


def _positive_counts(train: pd.DataFrame, index: dict[str, int], threshold: float) -> np.ndarray:
    """(n_items,) number of training interactions with rating >= threshold per item."""
    rows = train.loc[train["rating"] >= threshold, "item_id"].astype(str).map(index).dropna()
    return np.bincount(rows.to_numpy(dtype=np.int64), minlength=len(index)).astype(np.float64)


def _train_matrix(train: pd.DataFrame, index: dict[str, int]) -> tuple[sp.csr_matrix, list[str]]:
    """Binary (n_train_users, n_items) CSR matrix and its row order (sorted user ids)."""
    cols = train["item_id"].astype(str).map(index)
    known = cols.notna().to_numpy()
    users = train["user_id"].astype(str).to_numpy()[known]
    user_ids, rows = np.unique(users, return_inverse=True)
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols[known].to_numpy(dtype=np.int64))),
        shape=(len(user_ids), len(index)),
    )
    matrix.data[:] = 1.0  # duplicates were summed; keep the matrix binary
    matrix.sort_indices()
    return matrix, user_ids.tolist()


def _history_matrix(queries: Sequence[Query], index: dict[str, int]) -> sp.csr_matrix:
    """Binary (n_queries, n_items) CSR matrix of each query's history items (unknown items dropped)."""
    indptr, indices = [0], []
    for query in queries:
        rows = sorted({index[item] for item, _, _ in query.history if item in index})
        indices.extend(rows)
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.ones(len(indices), dtype=np.float32), np.array(indices, dtype=np.int64), indptr),
        shape=(len(queries), len(index)),
    )


def _genre_matrix(genre_lists: Sequence[list[str]]) -> tuple[list[str], np.ndarray]:
    """Sorted genre vocabulary and the binary (n_items, n_genres) float32 matrix."""
    vocabulary = sorted({g for genres in genre_lists for g in genres if g})
    column = {g: c for c, g in enumerate(vocabulary)}
    matrix = np.zeros((len(genre_lists), len(vocabulary)), dtype=np.float32)
    for row, genres in enumerate(genre_lists):
        matrix[row, [column[g] for g in genres if g]] = 1.0
    return vocabulary, matrix


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)

"""The fusion of the model with a popularity prior and a collaborative item-item term.

    s(u, i) = model(u, i) + γ_b · log(1 + demographic popularity_u(i)) + β_b · EASE(history_u)_i
              + δ · [i has a genre u's stated taste names]

``b`` is the bucket of the user's history length (items with an ID row; `EDGES`), so a profile-only
user, a few clicks and a long history each get their own weights; γ_b, β_b and δ are chosen by grid
search (`FinetuneConfig`'s ``fusion_*_grid``) on finetune's fusion users, a second group held out of
training and of both terms' counts that the early stopping did not choose the model on; never on the
test slices (docs/decisions/0004-fusion.md).

- prior: positives per item among training users of the same gender, age band and occupation,
  backing off to coarser groups (`DemographicPopularity`): what the towers under-weight for users
  with a few clicks;
- collaborative: EASE (Steck 2019), the closed-form item-item model over the binary training
  matrix, ``B = I - P / diag(P)``, ``P = (XᵀX + λI)⁻¹``: full rank where the towers' history path
  is 64-dimensional; it carries long histories (warm users), and only those (`EASE_MIN_HISTORY`).
- stated taste: a request whose text names genres ("I like Sci-Fi movies", matched as reasons match
  them) adds δ to the items of those genres (docs/decisions/0010-stated-taste-term.md).
Only items with an ID row have any term; new items get zero from all (the content map ranks them,
`content_map`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from recsys_tasks.config import MIN_GROUP, FinetuneConfig
from recsys_tasks.data.dataset import age_band
from recsys_tasks.explain.genres import genre_set
from recsys_tasks.model.popularity import DemographicPopularity
from recsys_tasks.protocol.metrics import ranking_metrics
from recsys_tasks.protocol.queries import Query

__all__ = [
    "EDGES",
    "Fusion",
    "FusionWeights",
    "ease_matrix",
    "fusion_meta",
    "id_items",
    "id_prior",
    "tune_fusion",
    "tune_fusion_blocks",
    "tune_taste",
    "tune_taste_blocks",
]

log = logging.getLogger(__name__)
_DEFAULTS = FinetuneConfig()  # the grids where a caller passes none

EDGES = (0, 10, 20, 40)  # buckets of history length: 0 | 1-10 | 11-20 | 21-40 | more
# EASE only past the cold-start range, which the model and the prior serve (docs/decisions/0004-fusion.md)
EASE_MIN_HISTORY = 21
CACHE_BYTES = 64 << 20  # known users' fused rows kept (`Fusion.id_scores`)


@dataclass(frozen=True)
class FusionWeights:
    """γ (prior) and β (EASE, absolute) per bucket of history length; δ (``taste``) for a stated genre."""

    prior: tuple[float, ...]
    ease: tuple[float, ...]
    edges: tuple[int, ...] = EDGES
    taste: float = 0.0

    def bucket(self, lengths: np.ndarray | int) -> np.ndarray:
        """Bucket index per history length: 0 for none, then one per edge interval."""
        return np.searchsorted(np.asarray(self.edges), np.asarray(lengths), side="left")


def ease_matrix(train: pd.DataFrame, item_ids: Sequence[str], lam: float) -> np.ndarray:
    """EASE weights (n, n) float32 over ``item_ids`` (rows and columns in that order) from the binary
    user x item matrix of ``train`` (any rating); the diagonal is zero."""
    import scipy.sparse as sp

    index = {str(i): r for r, i in enumerate(item_ids)}
    cols = train["item_id"].astype(str).map(index)
    known = cols.notna().to_numpy()
    users, rows = np.unique(train["user_id"].astype(str).to_numpy()[known], return_inverse=True)
    x = sp.csr_matrix((np.ones(len(rows)), (rows, cols[known].to_numpy(np.int64))), shape=(len(users), len(index)))
    x.data[:] = 1.0  # duplicates were summed: binary
    gram = (x.T @ x).toarray()
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)
    b[np.diag_indices_from(b)] = 0.0
    return b.astype(np.float32)


class Fusion:
    """Adds the prior and the EASE term to a recommender's scores (in place, catalog order).

    ``id_row``: each catalog row's ID row (``n_id`` where the item has none), as in the bundle;
    ``ease``: (n_id, n_id) and ``prior``'s counts (`id_prior`) over ID rows; ``genres``: each catalog
    row's genres ("|"-joined; None: no stated-taste term).
    """

    def __init__(
        self,
        weights: FusionWeights,
        ease: np.ndarray | None,
        prior: DemographicPopularity,
        id_row: np.ndarray,
        n_id: int,
        genres: Sequence[str] | None = None,
    ):
        self.weights, self.ease, self.prior, self.n_id = weights, ease, prior, n_id
        self._logs: dict[tuple[str, str, str], np.ndarray] = {}
        self._rows: dict = {}  # `id_scores` of known users' own histories, by key
        self._max_rows = max(1, CACHE_BYTES // (4 * max(1, n_id)))
        self._gamma, self._beta = np.asarray(weights.prior, np.float32), np.asarray(weights.ease, np.float32)
        self.set_catalog(id_row, genres)

    def set_catalog(self, id_row: np.ndarray, genres: Sequence[str] | None = None) -> None:
        """After items were added or changed: added rows get no term; ``genres`` as in the constructor."""
        id_row = np.asarray(id_row, np.int64)
        self.id_row = id_row
        self.id_cols = np.flatnonzero(id_row < self.n_id)  # catalog rows with an ID ...
        self.id_of_col = id_row[self.id_cols]  # ... and their ID rows
        self.genres = None if genres is None else list(genres)
        by_genre: dict[str, list[int]] = {}
        if self.genres is not None:
            for position, row in enumerate(self.id_cols):
                for g in genre_set(self.genres[row]):  # lower case, as the reasons match a stated taste
                    by_genre.setdefault(g, []).append(position)
        self._genre_positions = {g: np.array(p, np.int64) for g, p in by_genre.items()}  # genre -> `id_cols` positions
        # EASE's columns in catalog order, so a history's rows sum straight into `id_cols` order
        self._ease_cols = None if self.ease is None else np.ascontiguousarray(self.ease[:, self.id_of_col])
        self._logs.clear()
        self._rows.clear()

    def log_prior(self, profile: dict) -> np.ndarray:
        """log(1 + positives in the profile's demographic group) per `id_cols` row (read-only, cached)."""
        key = (str(profile.get("gender") or ""), age_band(profile.get("age")), str(profile.get("occupation") or ""))
        found = self._logs.get(key)
        if found is None:
            found = np.log1p(self.prior.counts_for(profile)[self.id_of_col]).astype(np.float32)
            found.flags.writeable = False
            self._logs[key] = found
        return found

    def terms(
        self, queries: Sequence[Query], histories: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(log prior, EASE or None, history lengths): both terms (b, len(`id_cols`)), over the catalog
        rows with an ID; ``histories``: each query's catalog rows (its whole history)."""
        prior = np.zeros((len(queries), len(self.id_cols)), np.float32)
        for q_i, q in enumerate(queries):
            prior[q_i] = self.log_prior(q.profile)
        ids = [self._ids(h) for h in histories]
        ease = None
        if self._ease_cols is not None:
            ease = np.zeros((len(queries), len(self.id_cols)), np.float32)
            for q_i, h in enumerate(ids):
                if len(h):
                    ease[q_i] = self._ease_cols[h].sum(0)
        return prior, ease, np.array([len(h) for h in ids], np.int64)

    def taste_positions(self, named: Iterable[str]) -> np.ndarray:
        """The `id_cols` positions of the items of any of the ``named`` genres (lower case)."""
        parts = [self._genre_positions[g] for g in named if g in self._genre_positions]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def _ids(self, rows: np.ndarray) -> np.ndarray:
        """The ID rows of a history's catalog rows (items without an ID have no EASE row)."""
        ids = self.id_row[np.asarray(rows, np.int64)]
        return ids[ids < self.n_id]

    def id_scores(
        self,
        queries: Sequence[Query],
        histories: Sequence[np.ndarray],
        keys: Sequence | None = None,
        named: Sequence[Iterable[str]] | None = None,
    ) -> np.ndarray:
        """What the fusion adds (b, len(`id_cols`)); every other catalog row gets nothing. ``keys``:
        per query a key under which its row is remembered (a known user's own history and profile:
        the same row every time) or None; EASE is summed only where its bucket's weight is not 0;
        ``named``: per query the genres its stated taste names (the taste term, never remembered)."""
        out = np.empty((len(queries), len(self.id_cols)), np.float32)
        for q_i, (query, rows) in enumerate(zip(queries, histories)):
            key = keys[q_i] if keys is not None else None
            found = self._rows.get(key) if key is not None else None
            if found is None:
                ids = self._ids(rows)
                b = int(self.weights.bucket(len(ids)))
                found = self._gamma[b] * self.log_prior(query.profile)
                if self._ease_cols is not None and self._beta[b] and len(ids):
                    found = found + self._beta[b] * self._ease_cols[ids].sum(0)
                if key is not None:
                    if len(self._rows) >= self._max_rows:
                        self._rows.pop(next(iter(self._rows)))  # the oldest
                    self._rows[key] = found
            out[q_i] = found
            if self.weights.taste and named is not None and named[q_i]:
                out[q_i, self.taste_positions(named[q_i])] += self.weights.taste
        return out

    def add(
        self,
        scores: np.ndarray,
        queries: Sequence[Query],
        histories: Sequence[np.ndarray],
        keys: Sequence | None = None,
        named: Sequence[Iterable[str]] | None = None,
    ) -> np.ndarray:
        """``scores`` (b, n_catalog) with the fusion's terms added, in place."""
        scores[:, self.id_cols] += self.id_scores(queries, histories, keys, named)
        return scores

    def reweighted(self, weights: FusionWeights) -> Fusion:
        """The same prior and EASE under other weights (what tuning found)."""
        return Fusion(weights, self.ease, self.prior, self.id_row, self.n_id, self.genres)

    @classmethod
    def from_meta(
        cls,
        meta: dict,
        ease: np.ndarray | None,
        catalog: pd.DataFrame,
        histories: pd.DataFrame,
        users: pd.DataFrame,
        n_id: int,
        threshold: float,
    ) -> Fusion:
        """From a bundle's ``fusion.json`` (`fusion_meta`) and ``ease.npy``: the prior is recounted from
        the bundle's training histories less the users the weights were tuned on, as at tuning."""
        w = meta["weights"]
        weights = FusionWeights(tuple(w["prior"]), tuple(w["ease"]), tuple(w["edges"]), float(w.get("taste", 0.0)))
        kept = histories[~histories["user_id"].astype(str).isin(set(meta["excluded_users"]))]
        return cls(
            weights,
            ease,
            id_prior(catalog, n_id, kept, users, threshold),
            catalog["id_row"].to_numpy(),
            n_id,
            catalog["genres"].tolist() if "genres" in catalog else None,
        )


def id_items(catalog: pd.DataFrame, n_id: int) -> list[str]:
    """The ids of the catalog's items with an ID row, in ID-row order (EASE's and the prior's order)."""
    id_row = catalog["id_row"].to_numpy()
    has = id_row < n_id
    return catalog["item_id"].astype(str).to_numpy()[has][np.argsort(id_row[has])].tolist()


def id_prior(
    catalog: pd.DataFrame, n_id: int, train: pd.DataFrame, users: pd.DataFrame, threshold: float
) -> DemographicPopularity:
    """Demographic popularity over the items with an ID row (the only ones training has counts of), so
    its memory is groups x n_id however big the catalog grows."""
    return DemographicPopularity(id_items(catalog, n_id), train, users, threshold, MIN_GROUP)


def fusion_meta(weights: FusionWeights, excluded_users: Iterable[str], lam: float, report: dict) -> dict:
    """What a bundle keeps of a tuned fusion (``fusion.json``; EASE itself goes to ``ease.npy``)."""
    return {
        "weights": asdict(weights),
        "ease_lambda": lam,
        "excluded_users": sorted(map(str, excluded_users)),
        "validation": report,
    }


FusionBlock = tuple  # (base, prior, ease or None, lengths, candidates, positives): some queries of `tune_fusion`


def tune_fusion(
    base: np.ndarray,
    prior: np.ndarray,
    ease: np.ndarray | None,
    lengths: np.ndarray,
    candidates: np.ndarray,
    positives: Sequence[np.ndarray],
    k: int = 20,
    *,
    prior_grid: Sequence[float] = _DEFAULTS.fusion_prior_grid,
    ease_grid: Sequence[float] = _DEFAULTS.fusion_ease_grid,
) -> tuple[FusionWeights, dict]:
    """Grid search of γ (``prior_grid``) and β (``ease_grid``, in units of std(model) / std(EASE)) per
    bucket on validation queries; both grids hold 0, the model alone.

    ``base``: the model's scores (q, n); ``prior``/``ease``: `Fusion.terms`, already placed in
    (q, n) arrays (zero off `Fusion.id_cols`); ``candidates`` (q, n) bool; ``positives``: rows per
    query. Returns the weights and a report: per bucket the number of queries and the validation
    NDCG@k of the model alone and fused. (`tune_fusion_blocks` with one block.)
    """
    block = (base, prior, ease, lengths, candidates, positives)
    return tune_fusion_blocks(lambda: [block], k, prior_grid=prior_grid, ease_grid=ease_grid)


def tune_fusion_blocks(
    blocks: Callable[[], Iterable[FusionBlock]],
    k: int = 20,
    *,
    prior_grid: Sequence[float] = _DEFAULTS.fusion_prior_grid,
    ease_grid: Sequence[float] = _DEFAULTS.fusion_ease_grid,
) -> tuple[FusionWeights, dict]:
    """`tune_fusion` over queries that come in blocks (``blocks()`` yields them afresh each time it is
    called; it is called twice: the EASE scale, then the grid), so memory is one block's, not all
    queries x items."""
    base_moments, ease_moments = _Moments(), _Moments()
    for base, _, ease, lengths, _, _ in blocks():
        warm = lengths > 0
        if ease is not None and warm.any():
            base_moments.add(base[warm])
            ease_moments.add(ease[warm])
    has = ease_moments.n > 0
    scale = base_moments.std() / max(ease_moments.std(), 1e-12) if has else 0.0
    per_bucket: dict[int, dict[tuple[float, float], list[np.ndarray]]] = {}
    for base, prior, ease, lengths, candidates, positives in blocks():
        buckets = FusionWeights((), ()).bucket(lengths)
        for b in np.unique(buckets).tolist():
            rows = np.flatnonzero(buckets == b)
            shortest = EDGES[b - 1] + 1 if b else 0
            betas_tried = tuple(ease_grid) if has and shortest >= EASE_MIN_HISTORY else (0.0,)
            found = per_bucket.setdefault(b, {})
            cand, pos = candidates[rows], [positives[r] for r in rows.tolist()]
            for g in prior_grid:
                for beta in betas_tried:
                    scores = base[rows] + g * prior[rows]
                    if beta and ease is not None:  # a weight other than 0 is tried only with EASE
                        scores = scores + beta * scale * ease[rows]
                    found.setdefault((g, beta), []).append(
                        ranking_metrics(scores, cand, pos, k, with_auc=False)["ndcg"]
                    )
    gammas, betas, report = [], [], {}
    for b in range(len(EDGES) + 1):
        if b not in per_bucket:
            gammas.append(0.0)
            betas.append(0.0)
            continue
        grid = {key: float(np.nanmean(np.concatenate(parts))) for key, parts in per_bucket[b].items()}
        best = max(grid, key=lambda key: (grid[key], -key[0] - key[1]))  # ties: the smaller weights
        gammas.append(best[0])
        betas.append(best[1] * scale)
        n_queries = int(sum(len(p) for p in per_bucket[b][best]))
        report[f"bucket{b}"] = {
            "queries": n_queries,
            "model": grid[(0.0, 0.0)],
            "fused": grid[best],
            "prior": best[0],
            "ease": best[1],
        }
        log.info(
            "fusion bucket %d (%d queries): NDCG@%d %.4f -> %.4f (γ %.2f, β %.2f)",
            b,
            n_queries,
            k,
            grid[(0.0, 0.0)],
            grid[best],
            best[0],
            best[1],
        )
    return FusionWeights(tuple(gammas), tuple(betas)), {"ease_scale": float(scale), **report}


class _Moments:
    """Count, sum and sum of squares in float64: a standard deviation over blocks."""

    def __init__(self) -> None:
        self.n, self.total, self.squares = 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        self.n, self.total, self.squares = (
            self.n + x.size,
            self.total + float(x.sum()),
            self.squares + float((x * x).sum()),
        )

    def std(self) -> float:
        if not self.n:
            return 0.0
        mean = self.total / self.n
        return float(np.sqrt(max(self.squares / self.n - mean * mean, 0.0)))


def tune_taste(
    base: np.ndarray,
    boost: np.ndarray,
    candidates: np.ndarray,
    positives: Sequence[np.ndarray],
    k: int = 20,
    *,
    grid: Sequence[float] = _DEFAULTS.fusion_taste_grid,
) -> tuple[float, dict]:
    """δ from ``grid`` (holding 0) by grid search on validation queries with a stated taste: ``base`` the
    fused scores without it (q, n), ``boost`` (q, n) 1 where an item has a named genre. Returns δ and its
    report. (`tune_taste_blocks` with one block.)"""
    return tune_taste_blocks([(base, boost, candidates, positives)], k, grid=grid)


def tune_taste_blocks(
    blocks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[np.ndarray]]],
    k: int = 20,
    *,
    grid: Sequence[float] = _DEFAULTS.fusion_taste_grid,
) -> tuple[float, dict]:
    """`tune_taste` over (base, boost, candidates, positives) blocks of queries, one block in memory at a time."""
    parts: dict[float, list[np.ndarray]] = {d: [] for d in grid}
    n_queries = 0
    for base, boost, candidates, positives in blocks:
        n_queries += len(base)
        for d in grid:
            parts[d].append(ranking_metrics(base + d * boost, candidates, positives, k, with_auc=False)["ndcg"])
    found = {d: float(np.nanmean(np.concatenate(p))) for d, p in parts.items()}
    best = max(found, key=lambda d: (found[d], -d))  # ties: the smaller weight
    log.info(
        "fusion stated taste (%d queries): NDCG@%d %.4f -> %.4f (δ %.2f)", n_queries, k, found[0.0], found[best], best
    )
    return best, {"queries": int(n_queries), "model": found[0.0], "fused": found[best], "taste": best}

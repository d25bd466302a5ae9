"""Ranking metrics over a full-catalog score matrix, vectorised across queries.

Shapes: ``scores`` is (n_queries, n_items); ``candidates`` is a boolean mask of the same
shape, or 1-D (n_items,) shared by every query; ``positives`` holds one array of item
indices per query. Only candidates are ranked, and a positive counts only where it is a
candidate (the slices guarantee every positive is one). Every function returns one value
per query; a query without positives gets NaN. Evaluation takes the means.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["auc", "ndcg_at_k", "ranking_metrics", "recall_at_k", "relevance_matrix", "top_k"]


def relevance_matrix(positives: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Boolean (n_queries, n_items) matrix with True at each query's positive items."""
    rel = np.zeros((len(positives), n_items), dtype=bool)
    lengths = np.fromiter((len(p) for p in positives), dtype=np.int64, count=len(positives))
    if lengths.sum():
        rows = np.repeat(np.arange(len(positives)), lengths)
        rel[rows, np.concatenate([np.asarray(p, dtype=np.int64) for p in positives])] = True
    return rel


def top_k(scores: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """Indices (n_queries, min(k, n_items)) of the best-scored candidates, best first.

    Non-candidates are scored -inf, so they only appear when a row has fewer than k
    candidates; callers must check the mask for those positions (the metrics do).
    """
    scores = np.asarray(scores)
    masked = np.where(_broadcast(candidates, scores.shape), scores, -np.inf)
    k = min(k, masked.shape[1])
    if k == 0:
        return np.zeros((masked.shape[0], 0), dtype=np.int64)
    # argpartition finds the k best in O(n_items); only those k are then sorted.
    part = np.argpartition(-masked, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(masked, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def recall_at_k(scores: np.ndarray, candidates: np.ndarray, positives: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Per query: positives in the top k / number of positives."""
    return ranking_metrics(scores, candidates, positives, k, with_auc=False)["recall"]


def ndcg_at_k(scores: np.ndarray, candidates: np.ndarray, positives: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Per query: binary-gain DCG@k over the ideal DCG of min(#positives, k) hits."""
    return ranking_metrics(scores, candidates, positives, k, with_auc=False)["ndcg"]


def auc(scores: np.ndarray, candidates: np.ndarray, positives: Sequence[np.ndarray]) -> np.ndarray:
    """Per query: P(a positive outscores a non-positive candidate), ties counting half."""
    scores = np.asarray(scores)
    cand = _broadcast(candidates, scores.shape)
    rel = relevance_matrix(positives, scores.shape[1]) & cand
    return _auc(scores, np.asarray(candidates, dtype=bool), rel)


def ranking_metrics(
    scores: np.ndarray,
    candidates: np.ndarray,
    positives: Sequence[np.ndarray],
    k: int,
    with_auc: bool = True,
    top: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Recall@k, NDCG@k (and AUC) per query from one top-k pass: {"recall", "ndcg", "auc"}.

    ``top``: this very ``top_k(scores, candidates, k)``, when the caller needs the lists too (not recomputed).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] != len(positives):
        raise ValueError(f"scores of shape {scores.shape} do not match {len(positives)} queries")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    cand = _broadcast(candidates, scores.shape)
    rel = relevance_matrix(positives, scores.shape[1]) & cand
    n_pos = rel.sum(axis=1)
    if top is None:
        top = top_k(scores, cand, k)
    elif top.shape != (scores.shape[0], min(k, scores.shape[1])):
        raise ValueError(f"top of shape {top.shape} is not the top {k} of scores of shape {scores.shape}")
    hits = np.take_along_axis(rel, top, axis=1)  # only candidates are relevant, see above

    discounts = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    dcg = hits @ discounts
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.minimum(n_pos, top.shape[1])]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "recall": np.where(n_pos > 0, hits.sum(axis=1) / n_pos, np.nan),
            "ndcg": np.where(n_pos > 0, dcg / ideal, np.nan),
        }
    if with_auc:
        out["auc"] = _auc(scores, np.asarray(candidates, dtype=bool), rel)
    return out


def _auc(scores: np.ndarray, candidates: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC per row from the positives' mid-ranks among the row's candidates.

    A mask shared by every row (1-D) keeps only its columns first, so a few candidates among many
    items (new items) cost a sort of those few, not of the catalogue.
    """
    if candidates.ndim == 1:
        columns = np.flatnonzero(candidates)
        scores, rel, candidates = scores[:, columns], rel[:, columns], np.ones(len(columns), dtype=bool)
    cand = np.broadcast_to(candidates, scores.shape)
    ordered = np.sort(np.where(cand, scores.astype(np.float64), np.nan), axis=1)  # non-candidates (NaN) last
    n_cand, n_pos = cand.sum(axis=1), rel.sum(axis=1)
    n_neg = n_cand - n_pos
    out = np.full(len(scores), np.nan)
    for q in np.flatnonzero((n_pos > 0) & (n_neg > 0)):
        row, pos = ordered[q, : n_cand[q]], scores[q, rel[q]].astype(np.float64)
        below, upto = np.searchsorted(row, pos, "left"), np.searchsorted(row, pos, "right")
        rank_sum = (below + (upto - below + 1) / 2.0).sum()  # 1-based mid-ranks: ties share the average
        out[q] = (rank_sum - n_pos[q] * (n_pos[q] + 1) / 2.0) / (n_pos[q] * n_neg[q])
    return out


def _broadcast(candidates: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    cand = np.asarray(candidates, dtype=bool)
    if cand.shape not in (shape, shape[1:]):
        raise ValueError(f"candidate mask of shape {cand.shape} does not fit scores of shape {shape}")
    return np.broadcast_to(cand, shape)

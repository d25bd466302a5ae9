"""Ranking metrics against hand-computed values and a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_tasks.protocol.metrics import auc, ndcg_at_k, ranking_metrics, recall_at_k, relevance_matrix, top_k


def _log2(x: float) -> float:
    return float(np.log2(x))


def test_perfect_ranking_scores_one() -> None:
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])
    positives = [np.array([0, 1])]
    assert ndcg_at_k(scores, np.ones(5, bool), positives, 3)[0] == pytest.approx(1.0)
    assert recall_at_k(scores, np.ones(5, bool), positives, 3)[0] == pytest.approx(1.0)
    assert auc(scores, np.ones(5, bool), positives)[0] == pytest.approx(1.0)


def test_known_permutation_matches_hand_computed_ndcg_and_recall() -> None:
    # ranking is items [1, 0, 2, 3, 4]; positives 0 and 3 sit at ranks 2 and 4
    scores = np.array([[4.0, 5.0, 3.0, 2.0, 1.0]])
    positives = [np.array([0, 3])]
    ideal = 1 + 1 / _log2(3)
    assert ndcg_at_k(scores, np.ones(5, bool), positives, 5)[0] == pytest.approx((1 / _log2(3) + 1 / _log2(5)) / ideal)
    # k=2 cuts the second hit; the ideal DCG still counts min(2 positives, k=2) hits
    assert ndcg_at_k(scores, np.ones(5, bool), positives, 2)[0] == pytest.approx((1 / _log2(3)) / ideal)
    assert recall_at_k(scores, np.ones(5, bool), positives, 2)[0] == pytest.approx(0.5)


def test_ideal_dcg_is_over_min_of_positives_and_k() -> None:
    # three positives, k=1, the top item is a positive: a perfect score at k=1
    scores = np.array([[3.0, 2.0, 1.0, 0.0]])
    assert ndcg_at_k(scores, np.ones(4, bool), [np.array([0, 1, 2])], 1)[0] == pytest.approx(1.0)
    assert recall_at_k(scores, np.ones(4, bool), [np.array([0, 1, 2])], 1)[0] == pytest.approx(1 / 3)


def test_non_candidates_are_never_ranked() -> None:
    scores = np.array([[9.0, 1.0, 2.0]])
    mask = np.array([False, True, True])  # the best-scored item is not a candidate
    top = top_k(scores, mask, 1)
    assert top.tolist() == [[2]]
    assert ndcg_at_k(scores, mask, [np.array([2])], 1)[0] == pytest.approx(1.0)


def test_fewer_candidates_than_k_gives_no_phantom_hits() -> None:
    scores = np.array([[1.0, 2.0, 3.0]])
    mask = np.array([True, False, False])
    # item 1 is a positive but not a candidate: it is ignored, item 0 is the only positive counted
    out = ranking_metrics(scores, mask, [np.array([0, 1])], k=3)
    assert out["ndcg"][0] == pytest.approx(1.0)
    assert out["recall"][0] == pytest.approx(1.0)


def test_shared_and_per_row_masks_agree() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((6, 30))
    mask = rng.random(30) > 0.3
    positives = [np.flatnonzero(mask)[rng.choice(mask.sum(), 3, replace=False)] for _ in range(6)]
    shared = ranking_metrics(scores, mask, positives, 5)
    per_row = ranking_metrics(scores, np.tile(mask, (6, 1)), positives, 5)
    for key in shared:
        np.testing.assert_allclose(shared[key], per_row[key])


def test_a_few_shared_candidates_give_the_auc_of_the_full_mask_with_ties() -> None:
    """AUC over a sparse shared mask (its columns kept first) equals the per-row mask's, ties included."""
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, size=(8, 200)).astype(np.float32)  # many ties
    mask = np.zeros(200, bool)
    mask[rng.choice(200, 9, replace=False)] = True
    positives = [np.flatnonzero(mask)[rng.choice(9, int(rng.integers(1, 4)), replace=False)] for _ in range(8)]
    shared = auc(scores, mask, positives)
    per_row = ranking_metrics(scores, np.tile(mask, (8, 1)), positives, 5)["auc"]
    np.testing.assert_allclose(shared, per_row)
    for q, pos in enumerate(positives):  # brute force over (positive, negative) pairs
        neg = [n for n in np.flatnonzero(mask) if n not in set(pos.tolist())]
        pairs = [(scores[q, p] > scores[q, n]) + 0.5 * (scores[q, p] == scores[q, n]) for p in pos for n in neg]
        assert shared[q] == pytest.approx(np.mean(pairs))


def test_auc_counts_ties_half() -> None:
    # positives score 3 and 1, negatives 2 and 1: pairs 1 + 1 + 0 + 0.5 = 2.5 of 4
    scores = np.array([[3.0, 2.0, 1.0, 1.0]])
    assert auc(scores, np.ones(4, bool), [np.array([0, 2])])[0] == pytest.approx(0.625)
    assert auc(np.zeros((1, 4)), np.ones(4, bool), [np.array([1])])[0] == pytest.approx(0.5)
    assert auc(np.array([[1.0, 2.0, 3.0]]), np.ones(3, bool), [np.array([0])])[0] == pytest.approx(0.0)


def test_auc_ignores_non_candidates() -> None:
    scores = np.array([[3.0, 2.0, 10.0, 1.0]])
    mask = np.array([True, True, False, True])  # the 10 would otherwise beat the positive
    assert auc(scores, mask, [np.array([0])])[0] == pytest.approx(1.0)


def test_matches_brute_force_reference() -> None:
    rng = np.random.default_rng(1)
    n_queries, n_items, k = 20, 40, 7
    scores = rng.random((n_queries, n_items))
    mask = rng.random((n_queries, n_items)) > 0.2
    positives = [rng.choice(np.flatnonzero(m), rng.integers(1, 6), replace=False) for m in mask]
    got = ranking_metrics(scores, mask, positives, k)
    for q in range(n_queries):
        cands = np.flatnonzero(mask[q])
        ranked = cands[np.argsort(-scores[q, cands])][:k]
        pos = set(positives[q].tolist())
        dcg = sum(1 / np.log2(r + 2) for r, item in enumerate(ranked) if item in pos)
        idcg = sum(1 / np.log2(r + 2) for r in range(min(len(pos), k)))
        neg = [i for i in cands if i not in pos]
        pairs = [(scores[q, p] > scores[q, n]) + 0.5 * (scores[q, p] == scores[q, n]) for p in pos for n in neg]
        assert got["ndcg"][q] == pytest.approx(dcg / idcg)
        assert got["recall"][q] == pytest.approx(len(pos & set(ranked.tolist())) / len(pos))
        assert got["auc"][q] == pytest.approx(np.mean(pairs))


def test_query_without_positives_is_nan() -> None:
    out = ranking_metrics(np.array([[1.0, 2.0]]), np.ones(2, bool), [np.array([], dtype=np.int64)], 2)
    assert all(np.isnan(v[0]) for v in out.values())


def test_nan_scores_and_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        ranking_metrics(np.array([[np.nan, 1.0]]), np.ones(2, bool), [np.array([0])], 1)
    with pytest.raises(ValueError, match="candidate mask"):
        ranking_metrics(np.zeros((1, 3)), np.ones(2, bool), [np.array([0])], 1)
    with pytest.raises(ValueError, match="queries"):
        ranking_metrics(np.zeros((2, 3)), np.ones(3, bool), [np.array([0])], 1)


def test_relevance_matrix_marks_positives() -> None:
    rel = relevance_matrix([np.array([1]), np.array([], dtype=np.int64), np.array([0, 2])], 3)
    assert rel.tolist() == [[False, True, False], [False, False, False], [True, False, True]]


def test_a_full_catalog_float32_batch_scores_each_query_as_if_it_were_alone() -> None:
    """The MovieLens-100K shape (1682 items), float32 scores, per-row masks and positives that are
    sometimes not candidates: the vectorised batch must give every query the value it gets alone."""
    rng = np.random.default_rng(2)
    n_queries, n_items, k = 200, 1682, 20
    scores = rng.random((n_queries, n_items)).astype(np.float32)
    mask = rng.random((n_queries, n_items)) > 0.05
    positives = [rng.choice(n_items, 15, replace=False) for _ in range(n_queries)]
    batch = ranking_metrics(scores, mask, positives, k)
    assert set(batch) == {"ndcg", "recall", "auc"}
    for key, values in batch.items():
        assert values.shape == (n_queries,) and np.all((values >= 0) & (values <= 1)), key
    for q in range(0, n_queries, 20):
        alone = ranking_metrics(scores[q : q + 1], mask[q], [positives[q]], k)
        for key in batch:
            assert batch[key][q] == pytest.approx(alone[key][0]), (key, q)
    # a positive that is not a candidate is never counted: recall's denominator is the candidates among them
    q = next(q for q in range(n_queries) if not mask[q, positives[q]].all())
    ranked = set(top_k(scores[q : q + 1], mask[q], k)[0].tolist())
    counted = [p for p in positives[q].tolist() if mask[q, p]]
    assert batch["recall"][q] == pytest.approx(len(ranked & set(counted)) / len(counted))


def test_a_top_k_handed_in_gives_the_same_metrics_and_must_fit() -> None:
    rng = np.random.default_rng(3)
    scores, mask = rng.random((6, 30)), rng.random((6, 30)) > 0.3
    positives = [rng.choice(30, 4, replace=False) for _ in range(6)]
    top = top_k(scores, mask, 5)
    given = ranking_metrics(scores, mask, positives, 5, top=top)
    for key, values in ranking_metrics(scores, mask, positives, 5).items():
        np.testing.assert_allclose(given[key], values)
    with pytest.raises(ValueError, match="top of shape"):
        ranking_metrics(scores, mask, positives, 5, top=top[:, :4])

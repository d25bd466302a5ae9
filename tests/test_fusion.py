"""The fusion's parts on synthetic data whose right answers are known (no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_tasks.model.fusion import (
    EASE_MIN_HISTORY,
    EDGES,
    Fusion,
    FusionWeights,
    ease_matrix,
    fusion_meta,
    id_items,
    tune_fusion,
    tune_taste,
)
from recsys_tasks.model.popularity import DemographicPopularity
from recsys_tasks.protocol.queries import Query

ITEMS = ["a", "b", "c", "d"]


def _train(pairs: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [u for u, _, _ in pairs],
            "item_id": [i for _, i, _ in pairs],
            "rating": [r for _, _, r in pairs],
            "timestamp": range(len(pairs)),
        }
    )


# ---------------------------------------------------------------- EASE
def test_ease_weights_items_that_occur_together() -> None:
    # a and b always together, c alone, d never rated
    train = _train([(u, i, 5.0) for u in "123" for i in "ab"] + [("4", "c", 5.0), ("5", "c", 1.0)])
    b = ease_matrix(train, ITEMS, lam=0.5)
    assert b.dtype == np.float32 and b.shape == (4, 4)
    assert np.all(np.diag(b) == 0)
    assert b[0, 1] > 0.5 and b[1, 0] > 0.5  # a predicts b and b predicts a
    assert b[0, 2] == pytest.approx(0.0, abs=1e-6) and b[2, 0] == pytest.approx(0.0, abs=1e-6)  # never together
    assert not b[3].any() and not b[:, 3].any()  # an item nobody rated: no weights either way


def test_ease_is_the_closed_form_solution() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((30, 5)) < 0.4).astype(float)
    train = _train([(str(u), ITEMS[i] if i < 4 else "e", 4.0) for u, i in zip(*np.nonzero(x))])
    lam = 2.0
    b = ease_matrix(train, ITEMS + ["e"], lam).astype(np.float64)
    # each column j minimises ||x_j - X b_j||² + lam ||b_j||² with b_jj = 0: a ridge on the other columns
    for j in range(5):
        others = [k for k in range(5) if k != j]
        a = x[:, others]
        ridge = np.linalg.solve(a.T @ a + lam * np.eye(4), a.T @ x[:, j])
        np.testing.assert_allclose(b[others, j], ridge, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- weights and terms
def test_buckets_of_history_length() -> None:
    weights = FusionWeights(prior=(0,) * 5, ease=(0,) * 5)
    assert EDGES == (0, 10, 20, 40)
    assert weights.bucket(np.array([0, 1, 10, 11, 20, 21, 40, 41, 500])).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4]


def _fusion(prior: tuple[float, ...], ease: tuple[float, ...], taste: float = 0.0) -> Fusion:
    """Catalog a, b, c, d, x: x is a new item (no ID row); ID rows in another order than the catalog's."""
    train = _train([("1", "a", 5.0), ("1", "b", 5.0), ("2", "a", 4.0), ("2", "c", 2.0), ("3", "b", 5.0)])
    users = pd.DataFrame(
        {
            "user_id": ["1", "2", "3"],
            "age": [30, 30, 30],
            "gender": ["F"] * 3,
            "occupation": ["writer"] * 3,
            "zip_code": [""] * 3,
        }
    )
    id_row = np.array([2, 0, 1, 3, 4])  # catalog a, b, c, d, x; x: 4 = n_id, no ID
    counts = DemographicPopularity(["b", "c", "a", "d"], train, users, 4.0, min_group=1)  # over ID rows
    matrix = np.arange(16, dtype=np.float32).reshape(4, 4)  # ID rows: b, c, a, d
    genres = ["Drama", "Sci-Fi|Drama", "Comedy", "", "Sci-Fi"]  # x (no ID) is Sci-Fi too
    return Fusion(FusionWeights(prior, ease, taste=taste), matrix, counts, id_row, n_id=4, genres=genres)


def test_the_fusion_adds_the_prior_and_ease_on_items_with_an_id_only() -> None:
    fusion = _fusion(prior=(1.0, 2.0, 0, 0, 0), ease=(0, 0.5, 0, 0, 0))
    profile = {"age": 31, "gender": "F", "occupation": "writer"}
    queries = [Query("new", profile, ()), Query("new", profile, (("a", 5.0, 1), ("x", 4.0, 2)))]
    scores = np.zeros((2, 5), np.float32)
    fusion.add(scores, queries, [np.array([], np.int64), np.array([0, 4])])  # catalog rows: a, then x (no ID)
    positives = np.log1p([2.0, 2.0, 0.0, 0.0])  # a: users 1, 2; b: users 1, 3; c rated 2 (not a positive)
    np.testing.assert_allclose(scores[0, :4], 1.0 * positives, rtol=1e-6)
    ease_a = np.arange(16, dtype=np.float32).reshape(4, 4)[2]  # a's ID row is 2; columns are ID rows b, c, a, d
    np.testing.assert_allclose(scores[1, :4], 2.0 * positives + 0.5 * ease_a[[2, 0, 1, 3]], rtol=1e-6)
    assert scores[:, 4].tolist() == [0.0, 0.0]  # the new item gets neither term


def test_items_added_later_get_no_prior() -> None:
    fusion = _fusion(prior=(1.0,) * 5, ease=(0,) * 5)
    fusion.set_catalog(np.array([2, 0, 1, 3, 4, 4]))  # a sixth item, without an ID
    scores = fusion.add(np.zeros((1, 6), np.float32), [Query("new", {"gender": "F"}, ())], [np.array([], np.int64)])
    assert scores[0, 5] == 0.0 and scores[0, 0] > 0


def test_id_items_are_in_id_row_order() -> None:
    catalog = pd.DataFrame({"item_id": ["a", "b", "c", "d", "x"], "id_row": [2, 0, 1, 3, 4]})
    assert id_items(catalog, n_id=4) == ["b", "c", "a", "d"]


def test_fusion_meta_keeps_the_weights_and_the_users_left_out() -> None:
    weights = FusionWeights((0.5,) * 5, (0.0,) * 5)
    meta = fusion_meta(weights, {"7", "3"}, 200.0, {"bucket0": {"queries": 2}})
    assert meta["weights"] == {"prior": (0.5,) * 5, "ease": (0.0,) * 5, "edges": EDGES, "taste": 0.0}
    assert meta["excluded_users"] == ["3", "7"] and meta["ease_lambda"] == 200.0


# ---------------------------------------------------------------- tuning
def _validation(lengths: list[int], n_items: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    q = len(lengths)
    base = rng.normal(0, 1, (q, n_items)).astype(np.float32)  # the model: noise
    positives = [rng.choice(n_items, 3, replace=False) for _ in range(q)]
    relevant = np.zeros((q, n_items), np.float32)
    for row, pos in enumerate(positives):
        relevant[row, pos] = 3.0
    return base, relevant, np.array(lengths), np.ones((q, n_items), bool), positives


def test_tuning_takes_a_term_that_ranks_the_positives_and_leaves_one_that_does_not() -> None:
    base, relevant, lengths, candidates, positives = _validation([0] * 20 + [5] * 20)
    weights, report = tune_fusion(base, relevant, None, lengths, candidates, positives)
    assert weights.prior[0] > 0 and weights.prior[1] > 0
    assert report["bucket0"]["fused"] > report["bucket0"]["model"] and report["bucket0"]["queries"] == 20
    weights, report = tune_fusion(base, np.ones_like(relevant), None, lengths, candidates, positives)
    assert weights.prior[:2] == (0.0, 0.0)  # a term that moves every item alike changes no ranking: no weight
    assert report["bucket0"]["fused"] == report["bucket0"]["model"]
    assert "bucket2" not in report and weights.prior[2] == 0.0  # no queries: no weight


def test_ease_is_tuned_only_past_the_cold_start_range() -> None:
    short, long = EASE_MIN_HISTORY - 1, EASE_MIN_HISTORY + 10
    base, relevant, lengths, candidates, positives = _validation([short] * 20 + [long] * 20)
    weights, report = tune_fusion(base, np.zeros_like(relevant), relevant, lengths, candidates, positives)
    assert weights.ease[2] == 0.0  # 11-20 items: EASE not tried, however well it would do
    assert weights.ease[3] > 0 and report["bucket3"]["fused"] > report["bucket3"]["model"]


def test_a_known_users_row_is_remembered_by_key_until_the_catalog_changes() -> None:
    fusion = _fusion(prior=(1.0,) * 5, ease=(0.5,) * 5)
    query = Query("3", {"gender": "F"}, (("a", 5.0, 1),))
    first = fusion.id_scores([query], [np.array([0])], keys=[("3", "F")])
    again = fusion.id_scores([query], [np.array([1])], keys=[("3", "F")])  # another history, same key: remembered
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, fusion.id_scores([query], [np.array([1])]))  # no key: computed
    fusion.set_catalog(fusion.id_row)  # items added: every row is computed anew
    assert not np.array_equal(first, fusion.id_scores([query], [np.array([1])], keys=[("3", "F")]))


# ---------------------------------------------------------------- stated taste
def test_a_stated_genre_adds_the_taste_weight_to_its_items_with_an_id_and_is_never_remembered() -> None:
    fusion = _fusion(prior=(0,) * 5, ease=(0,) * 5, taste=2.0)
    query = Query("3", {"gender": "F"}, (("a", 5.0, 1),), "I like sci-fi")
    scores = fusion.add(
        np.zeros((2, 5), np.float32),
        [query, query],
        [np.array([0])] * 2,
        keys=[("3",), ("3",)],
        named=[{"sci-fi"}, set()],
    )
    assert scores[0].tolist() == [0.0, 2.0, 0.0, 0.0, 0.0]  # b is Sci-Fi; x is too, but has no ID row
    assert scores[1].tolist() == [0.0] * 5  # the same user's remembered row without a stated genre: no boost
    assert fusion.taste_positions({"drama", "sci-fi", "western"}).tolist() == [0, 1]  # a, b: positions in id_cols
    fusion.set_catalog(fusion.id_row, ["Sci-Fi", "", "", "", ""])  # an item's genres changed
    assert fusion.id_scores([query], [np.array([0])], named=[{"sci-fi"}])[0].tolist() == [2.0, 0.0, 0.0, 0.0]
    untuned = _fusion(prior=(0,) * 5, ease=(0,) * 5)
    assert not untuned.id_scores([query], [np.array([0])], named=[{"sci-fi"}]).any()  # δ = 0: no term


def test_the_taste_weight_is_tuned_and_a_useless_boost_gets_none() -> None:
    base, relevant, _, candidates, positives = _validation([0] * 30)
    weight, report = tune_taste(base, (relevant > 0).astype(np.float32), candidates, positives)
    assert weight > 0 and report["fused"] > report["model"] and report["queries"] == 30
    weight, report = tune_taste(base, np.ones_like(base), candidates, positives)
    assert weight == 0.0 and report["fused"] == report["model"]


def test_fusion_json_without_a_taste_weight_loads_with_none() -> None:
    catalog = pd.DataFrame({"item_id": ["a", "b"], "id_row": [0, 1], "genres": ["Drama", "Sci-Fi"]})
    train = _train([("1", "a", 5.0), ("2", "b", 5.0)])
    users = pd.DataFrame(
        {"user_id": ["1", "2"], "age": [30, 30], "gender": ["F", "M"], "occupation": ["x", "x"], "zip_code": ["", ""]}
    )
    meta = fusion_meta(FusionWeights((1.0,) * 5, (0.0,) * 5), set(), 200.0, {})
    del meta["weights"]["taste"]  # saved before the term
    fusion = Fusion.from_meta(meta, None, catalog, train, users, n_id=2, threshold=4.0)
    assert fusion.weights.taste == 0.0 and fusion.taste_positions({"sci-fi"}).tolist() == [1]


def test_tuning_over_blocks_of_queries_finds_what_tuning_over_all_finds() -> None:
    """`tune_fusion_blocks` (finetune scores a block of users at a time) agrees with the dense `tune_fusion`:
    the same weights and per-bucket NDCG, the EASE scale to float rounding."""
    from recsys_tasks.model.fusion import tune_fusion_blocks, tune_taste_blocks

    lengths = [0] * 15 + [5] * 15 + [EASE_MIN_HISTORY + 5] * 15
    base, relevant, lengths_a, candidates, positives = _validation(lengths, seed=3)
    ease = relevant * 0.5 + np.random.default_rng(4).normal(0, 1, relevant.shape).astype(np.float32)
    dense = tune_fusion(base, relevant * 0.3, ease, lengths_a, candidates, positives)
    order = np.random.default_rng(5).permutation(len(lengths))  # blocks that mix the buckets

    def blocks():
        for part in np.array_split(order, 4):
            yield (
                base[part],
                relevant[part] * 0.3,
                ease[part],
                lengths_a[part],
                candidates[part],
                [positives[i] for i in part],
            )

    weights, report = tune_fusion_blocks(blocks)
    assert weights.prior == dense[0].prior and weights.ease == pytest.approx(dense[0].ease, rel=1e-5)
    assert report["ease_scale"] == pytest.approx(dense[1]["ease_scale"], rel=1e-5)
    for b in ("bucket0", "bucket1", "bucket3"):
        assert report[b] == pytest.approx(dense[1][b])
    boost = (relevant > 0).astype(np.float32)
    taste = tune_taste(base, boost, candidates, positives)
    parts = [(base[p], boost[p], candidates[p], [positives[i] for i in p]) for p in np.array_split(order, 3)]
    assert tune_taste_blocks(parts) == (taste[0], pytest.approx(taste[1]))

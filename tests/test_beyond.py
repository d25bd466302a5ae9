"""Beyond-accuracy metrics on lists small enough to work out by hand, and the blocked path against the one-shot."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys_tasks.protocol.beyond import BeyondAccuracy, beyond_accuracy, genre_matrix, training_popularity

# Items 0..4: genres {Action, Comedy}, {Action}, {Drama}, {}, {}; training interactions 6, 2, 1, 1, 0.
GENRES = genre_matrix([["Action", "Comedy"], ["Action"], ["Drama"], [], []])
COUNTS = np.array([6.0, 2.0, 1.0, 1.0, 0.0])
# Add-one smoothed shares: (count + 1) / (10 + 5).
INFORMATION = -np.log2(np.array([7, 3, 2, 2, 1]) / 15)


def test_coverage_is_the_share_of_the_catalogue_in_any_list() -> None:
    out = beyond_accuracy(np.array([[0, 1], [0, 4], [1, 0]]), COUNTS, GENRES)
    assert out["coverage@2"] == pytest.approx(3 / 5)  # items 0, 1 and 4


def test_novelty_is_the_mean_smoothed_self_information_per_list_then_over_lists() -> None:
    out = beyond_accuracy(np.array([[0, 1], [0, 4]]), COUNTS, None)
    first, second = (INFORMATION[0] + INFORMATION[1]) / 2, (INFORMATION[0] + INFORMATION[4]) / 2
    assert out["novelty@2"] == pytest.approx((first + second) / 2)
    assert INFORMATION[4] == pytest.approx(math.log2(15))  # never in training: finite, the largest
    assert math.isnan(out["diversity@2"])  # no genres given


def test_diversity_is_one_minus_jaccard_over_pairs_with_known_genre_sets() -> None:
    # [A, B, C]: A-B share Action of {Action, Comedy} (0.5), A-C and B-C share nothing (1, 1).
    # [D, E]: neither has a genre, alike (0). [A, D]: nothing shared (1). [A]: no pair, left out.
    rows = np.array([[0, 1, 2], [3, 4, -1], [0, 3, -1], [0, -1, -1]])
    expected = ((0.5 + 1 + 1) / 3 + 0.0 + 1.0) / 3
    assert beyond_accuracy(rows, COUNTS, GENRES)["diversity@3"] == pytest.approx(expected)
    dense = GENRES.toarray()
    assert beyond_accuracy(rows, COUNTS, dense)["diversity@3"] == pytest.approx(expected)
    assert beyond_accuracy(rows, COUNTS, dense.astype(np.float32))["diversity@3"] == pytest.approx(expected)


def test_pop_share_counts_the_ten_percent_head_per_list() -> None:
    # 11 items: the head is ceil(1.1) = 2 items, the two most interacted with: 1 (10) and 3 (7).
    counts = np.array([0, 10, 3, 7, 1, 0, 0, 2, 0, 0, 0], dtype=float)
    rows = np.array([[1, 3, 2, 0], [2, 4, 7, 1], [0, 5, 6, 8]])
    assert beyond_accuracy(rows, counts)["pop_share@4"] == pytest.approx((2 / 4 + 1 / 4 + 0) / 3)


def test_pop_share_ties_go_to_the_lower_index_and_unseen_items_are_never_head() -> None:
    tied = np.array([5, 5, 5, 0, 0, 0, 0, 0, 0, 0], dtype=float)  # head of 1: item 0
    assert beyond_accuracy(np.array([[0], [1]]), tied)["pop_share@1"] == pytest.approx(0.5)
    unseen = np.zeros(10)
    assert beyond_accuracy(np.array([[0, 1]]), unseen)["pop_share@2"] == 0.0


def test_empty_slots_are_left_out_of_every_metric() -> None:
    out = beyond_accuracy(np.array([[0, -1], [-1, -1]]), COUNTS, GENRES)
    assert out["coverage@2"] == pytest.approx(1 / 5)
    assert out["novelty@2"] == pytest.approx(INFORMATION[0])  # one list with one item; the empty one is not a list
    assert out["pop_share@2"] == 1.0
    assert math.isnan(out["diversity@2"])  # no list has a pair


def test_no_lists_give_zero_coverage_and_nan_elsewhere() -> None:
    out = beyond_accuracy(np.zeros((0, 3), dtype=np.int64), COUNTS, GENRES)
    assert out["coverage@3"] == 0.0
    assert all(math.isnan(out[f"{m}@3"]) for m in ("novelty", "diversity", "pop_share"))


def test_blocked_accumulation_equals_one_shot() -> None:
    rng = np.random.default_rng(7)
    n_items, k = 60, 5
    counts = rng.integers(0, 50, n_items).astype(float)
    genres = sp.csr_matrix(rng.random((n_items, 8)) < 0.25)
    rows = np.stack([rng.choice(n_items, k, replace=False) for _ in range(37)])
    rows[3, 2:] = -1  # a short list
    whole = beyond_accuracy(rows, counts, genres)
    acc = BeyondAccuracy(counts, genres, k)
    for lo, hi in ((0, 1), (1, 10), (10, 10), (10, 37)):
        acc.add(rows[lo:hi])
    blocked = acc.result()
    assert blocked.keys() == whole.keys()
    for key in whole:
        assert blocked[key] == pytest.approx(whole[key]), key


def test_training_popularity_and_genre_matrix_follow_the_item_order() -> None:
    train = pd.DataFrame({"item_id": ["b", "a", "b", "zz", "b"], "rating": [1, 5, 3, 4, 2]})
    assert training_popularity(["a", "b", "c"], train).tolist() == [1.0, 3.0, 0.0]  # any rating; unknown dropped
    matrix = genre_matrix([["Drama", "Action"], [], ["Drama", ""]])
    assert matrix.toarray().tolist() == [[True, True], [False, False], [False, True]]  # Action, Drama


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(ValueError, match="outside the 5-item catalogue"):
        beyond_accuracy(np.array([[0, 5]]), COUNTS)
    with pytest.raises(ValueError, match=r"\(n_queries, k\)"):
        beyond_accuracy(np.array([0, 1]), COUNTS)
    with pytest.raises(ValueError, match="integer"):
        beyond_accuracy(np.array([[0.0, 1.0]]), COUNTS)
    with pytest.raises(ValueError, match="item 2 has -1"):
        beyond_accuracy(np.array([[0]]), np.array([1.0, 2.0, -1.0]))
    with pytest.raises(ValueError, match="non-empty"):
        beyond_accuracy(np.array([[0]]), np.zeros(0))
    with pytest.raises(ValueError, match=r"item_genres has shape \(4, 3\)"):
        beyond_accuracy(np.array([[0]]), COUNTS, GENRES[:4])
    with pytest.raises(ValueError, match=r"\(n_queries, 2\)"):
        BeyondAccuracy(COUNTS, None, 2).add(np.array([[0, 1, 2]]))

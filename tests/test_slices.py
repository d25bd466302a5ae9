"""The slices follow shared/EVALUATION.md on a hand-made split whose slices are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_tasks.config import EvaluateConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.split import Split
from recsys_tasks.protocol.queries import history_of, profile_of
from recsys_tasks.protocol.slices import BASELINES_BY_SLICE, build_slices, stated_taste

# items "1".."6" are rows 0..5; "5" and "6" are the cold items
GENRES = ["Comedy", "Drama", "Comedy|Drama", "Sci-Fi", "Horror", "Sci-Fi|Horror"]
ROWS = [  # user, item, rating, timestamp, part
    ("c1", "1", 5, 10, "cold_user"),
    ("c1", "2", 2, 20, "cold_user"),
    ("c1", "3", 4, 30, "cold_user"),
    ("c1", "4", 5, 40, "cold_user"),
    ("c1", "6", 4, 50, "cold_user"),
    ("c2", "1", 2, 10, "cold_user"),
    ("c2", "2", 3, 20, "cold_user"),  # no positive: in no slice
    ("w1", "1", 5, 1, "train"),
    ("w1", "2", 4, 2, "train"),
    ("w1", "3", 2, 3, "train"),
    ("w1", "4", 5, 10, "warm_test"),
    ("w1", "5", 4, 5, "cold_item"),
    ("w2", "3", 5, 2, "train"),
    ("w2", "1", 4, 1, "train"),
    ("w2", "2", 3, 9, "warm_test"),
    ("w2", "6", 2, 4, "cold_item"),  # no positive: not in warm, cold-item
    ("w3", "2", 5, 1, "train"),
    ("w3", "4", 4, 2, "train"),
    ("w3", "3", 5, 9, "warm_test"),
    ("w3", "1", 4, 8, "warm_test"),
    ("w3", "6", 5, 3, "cold_item"),
]


@pytest.fixture(scope="module")
def data() -> tuple[Dataset, Split]:
    inter = pd.DataFrame(ROWS, columns=["user_id", "item_id", "rating", "timestamp", "part"])
    inter = inter.astype({"rating": float, "timestamp": "int64"})
    items = pd.DataFrame(
        {
            "item_id": [str(i) for i in range(1, 7)],
            "title": list("abcdef"),
            "year": pd.array([1990] * 6, dtype="Int64"),
            "genres": GENRES,
            "description": [""] * 6,
            "entity_id": [""] * 6,
        }
    )
    users = pd.DataFrame(
        {
            "user_id": ["c1", "c2", "w1", "w2", "w3"],
            "age": pd.array([30, None, 20, 40, 50], dtype="Int64"),
            "gender": ["F", "M", "M", "F", "M"],
            "occupation": ["writer"] * 5,
            "zip_code": ["12345", "", "1", "2", "3"],
        }
    )
    kg = pd.DataFrame({"head_id": [], "relation_id": [], "tail_id": []})
    dataset = Dataset(inter.drop(columns="part"), users, items, kg)
    return dataset, Split(inter, ("c1", "c2"), ("5", "6"), 0, True)


@pytest.fixture(scope="module")
def slices(data) -> dict:
    dataset, split = data
    built = build_slices(dataset, split, EvaluateConfig(support_sizes=(0, 2, 5)), positive_threshold=4.0)
    return {s.name: s for s in built}


def test_slices_in_report_order_and_empty_ones_left_out(slices) -> None:
    # c1 has 5 interactions: with K=5 nothing is left to predict, so cold-user@5 is empty
    assert list(slices) == ["cold-user@0", "cold-user@2", "cold-user@0+text", "cold-item", "warm"]


def test_cold_user_support_is_the_k_earliest_and_not_a_candidate(slices) -> None:
    s = slices["cold-user@2"]
    (query,) = s.queries
    assert query.user_id == "c1"
    assert query.history == (("1", 5.0, 10), ("2", 2.0, 20))
    assert s.candidates.tolist() == [[False, False, True, True, True, True]]
    assert s.positives[0].tolist() == [2, 3, 5]  # later interactions rated >= 4
    assert s.baselines == BASELINES_BY_SLICE["cold-user@K"]


def test_cold_user_at_zero_sees_only_the_profile(slices) -> None:
    s = slices["cold-user@0"]
    (query,) = s.queries
    assert query.history == () and query.text is None
    assert query.profile == {"age": 30, "gender": "F", "occupation": "writer", "zip_code": "12345"}
    assert s.candidates.all() and s.positives[0].tolist() == [0, 2, 3, 5]
    assert s.baselines == ("popularity", "demographic_popularity")


def test_no_cold_user_is_in_training(data, slices) -> None:
    _, split = data
    train_users = set(split.train["user_id"])
    for name, s in slices.items():
        if name.startswith("cold-user"):
            assert {q.user_id for q in s.queries} <= set(split.cold_users) - train_users


def test_stated_taste_names_the_two_most_liked_genres(slices) -> None:
    (query,) = slices["cold-user@0+text"].queries
    # positives 1, 3, 4, 6: Comedy 2, Sci-Fi 2, Drama 1, Horror 1; the tie goes by name
    assert query.text == "I like Comedy and Sci-Fi movies."
    assert query.history == ()
    assert slices["cold-user@0+text"].baselines == ("popularity", "demographic_popularity", "genre_popularity")


def test_stated_taste_with_one_or_no_genre() -> None:
    assert stated_taste([["Drama"], ["Drama"]]) == "I like Drama movies."
    assert stated_taste([[], []]) is None


def test_cold_item_ranks_only_cold_items_from_the_training_history(slices) -> None:
    s = slices["cold-item"]
    assert [q.user_id for q in s.queries] == ["w1", "w3"]  # w2's only cold-item rating is a 2
    assert s.candidates.tolist() == [False, False, False, False, True, True]
    assert [p.tolist() for p in s.positives] == [[4], [5]]
    assert s.queries[0].history == (("1", 5.0, 1), ("2", 4.0, 2), ("3", 2.0, 3))
    assert s.baselines == ("random", "genre_profile", "text_profile")


def test_warm_excludes_the_training_items(slices) -> None:
    s = slices["warm"]
    assert [q.user_id for q in s.queries] == ["w1", "w3"]
    assert s.candidates.tolist() == [[False, False, False, True, True, True], [True, False, True, False, True, True]]
    assert [p.tolist() for p in s.positives] == [[3], [0, 2]]
    assert s.queries[1].history == (("2", 5.0, 1), ("4", 4.0, 2))  # oldest first
    assert s.baselines == ("popularity", "als")


def test_positives_are_always_candidates(slices) -> None:
    for s in slices.values():
        mask = np.broadcast_to(s.candidates, (s.n_users, s.candidates.shape[-1]))
        assert all(mask[row, pos].all() for row, pos in enumerate(s.positives)), s.name


def test_rows_cut_queries_masks_and_positives_together(slices) -> None:
    queries, candidates, positives = slices["warm"].rows(1, 2)
    assert [q.user_id for q in queries] == ["w3"] and candidates.shape == (1, 6) and len(positives) == 1
    _, shared, _ = slices["cold-item"].rows(0, 1)
    assert shared.shape == (6,)


def test_no_holdout_no_slices(data) -> None:
    dataset, split = data
    everything = Split(split.interactions.assign(part="train"), (), (), 0, False)
    assert build_slices(dataset, everything, EvaluateConfig(), 4.0) == []


def test_query_helpers_order_history_and_fill_missing_profile_fields() -> None:
    frame = pd.DataFrame({"item_id": ["b", "a", "c"], "rating": [4.0, 5.0, 1.0], "timestamp": [2, 2, 1]})
    assert history_of(frame) == (("c", 1.0, 1), ("a", 5.0, 2), ("b", 4.0, 2))  # item id breaks the tie
    assert profile_of({"age": pd.NA, "gender": "F", "occupation": None}) == {
        "age": None,
        "gender": "F",
        "occupation": "",
        "zip_code": "",
    }

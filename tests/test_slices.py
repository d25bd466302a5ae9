"""The slices follow shared/EVALUATION.md on a hand-made split whose slices are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_tasks.config import ConfigError, EvaluateConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.split import Split
from recsys_tasks.protocol.queries import history_of, profile_of
from recsys_tasks.protocol.slices import BASELINES_BY_SLICE, Slice, build_slices, sample_rows
from recsys_tasks.text.texts import stated_taste

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
    assert _masks(s).tolist() == [[False, False, True, True, True, True]]
    assert s.positives[0].tolist() == [2, 3, 5]  # later interactions rated >= 4
    assert s.baselines == BASELINES_BY_SLICE["cold-user@K"]


def test_cold_user_at_zero_sees_only_the_profile(slices) -> None:
    s = slices["cold-user@0"]
    (query,) = s.queries
    assert query.history == () and query.text is None
    assert query.profile == {"age": 30, "gender": "F", "occupation": "writer", "zip_code": "12345"}
    assert _masks(s).all() and s.positives[0].tolist() == [0, 2, 3, 5]
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
    assert _masks(s).tolist() == [[False, False, False, True, True, True], [True, False, True, False, True, True]]
    assert [e.tolist() for e in s.excluded] == [[0, 1, 2], [1, 3]]
    assert [p.tolist() for p in s.positives] == [[3], [0, 2]]
    assert s.queries[1].history == (("2", 5.0, 1), ("4", 4.0, 2))  # oldest first
    assert s.baselines == ("popularity", "als")


def test_positives_are_always_candidates(slices) -> None:
    for s in slices.values():
        mask = _masks(s)
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


# ---------------------------------------------------------------- against a dense build, and sampling
def _masks(s: Slice) -> np.ndarray:
    """Every query's candidate mask, (n_users, n_items), built the way a chunk gets it."""
    _, mask, _ = s.rows(0, s.n_users)
    return np.broadcast_to(mask, (s.n_users, s.n_items))


def _dense_reference(dataset: Dataset, split: Split, support_sizes: tuple[int, ...], threshold: float) -> dict:
    """Slice name -> [(user, history, dense mask, positives)], built per user and item the direct way."""
    item_ids = dataset.items["item_id"].astype(str).tolist()
    index, n = {item: row for row, item in enumerate(item_ids)}, len(item_ids)
    ordered = split.interactions.sort_values(["timestamp", "item_id"], kind="stable")
    hist: dict[tuple[str, str], list[tuple[str, float, int]]] = {}
    for r in ordered.itertuples():
        hist.setdefault((str(r.part), str(r.user_id)), []).append((str(r.item_id), float(r.rating), int(r.timestamp)))

    def users(part: str) -> list[str]:
        return sorted(u for p, u in hist if p == part)

    def liked(history: list) -> list[int]:
        return sorted({index[item] for item, rating, _ in history if rating >= threshold})

    def mask_without(history: list, base: np.ndarray) -> np.ndarray:
        mask = base.copy()
        mask[[index[item] for item, _, _ in history]] = False
        return mask

    everything, cold = np.ones(n, bool), np.isin(item_ids, list(split.cold_items))
    out: dict[str, list] = {}
    for k in support_sizes:
        rows = []
        for u in users("cold_user"):
            full = hist[("cold_user", u)]
            mask = mask_without(full[:k], everything)
            rows.append((u, tuple(full[:k]), mask, [p for p in liked(full[k:]) if mask[p]]))
        out[f"cold-user@{k}"] = rows
    out["cold-user@0+text"] = [(u, (), everything, liked(hist[("cold_user", u)])) for u in users("cold_user")]
    out["cold-item"] = [
        (u, tuple(hist.get(("train", u), [])), cold, [p for p in liked(hist[("cold_item", u)]) if cold[p]])
        for u in users("cold_item")
    ]
    out["warm"] = []
    for u in users("warm_test"):
        train = hist.get(("train", u), [])
        mask = mask_without(train, everything)
        out["warm"].append((u, tuple(train), mask, [p for p in liked(hist[("warm_test", u)]) if mask[p]]))
    return {name: [row for row in rows if row[3]] for name, rows in out.items()}


@pytest.fixture(scope="module")
def random_split() -> tuple[Dataset, Split]:
    """40 users x 25 items, tied timestamps, re-ratings across parts: 6 cold users, 3 cold items."""
    rng = np.random.default_rng(7)
    items = [f"i{n}" for n in range(25)]
    cold_users, cold_items = [f"u{n:02d}" for n in range(6)], items[-3:]
    rows = []
    for n in range(40):
        user = f"u{n:02d}"
        for item in rng.choice(items, size=int(rng.integers(3, 15)), replace=False):
            rating, ts = float(rng.integers(1, 6)), int(rng.integers(0, 8))
            if user in cold_users:
                part = "cold_user"
            elif item in cold_items:
                part = "cold_item"
            else:
                part = str(rng.choice(["train", "warm_test"], p=[0.7, 0.3]))
            rows.append((user, item, rating, ts, part))
            if part == "train" and rng.random() < 0.1:  # rated again later
                rows.append((user, item, 5.0, ts + 1, "warm_test"))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "part"])
    item_frame = pd.DataFrame(
        {
            "item_id": items,
            "title": items,
            "year": pd.array([2000] * 25, dtype="Int64"),
            "genres": [GENRES[n % len(GENRES)] for n in range(25)],
            "description": [""] * 25,
            "entity_id": [""] * 25,
        }
    )
    user_ids = sorted(set(inter["user_id"]))
    users = pd.DataFrame(
        {
            "user_id": user_ids,
            "age": pd.array([20] * len(user_ids), dtype="Int64"),
            "gender": ["F"] * len(user_ids),
            "occupation": ["writer"] * len(user_ids),
            "zip_code": [""] * len(user_ids),
        }
    )
    kg = pd.DataFrame({"head_id": [], "relation_id": [], "tail_id": []})
    return Dataset(inter.drop(columns="part"), users, item_frame, kg), Split(
        inter, tuple(cold_users), tuple(cold_items), 0, True
    )


@pytest.mark.parametrize("which", ["hand-made", "random"])
def test_slices_equal_a_dense_per_user_build(which, data, random_split) -> None:
    dataset, split = data if which == "hand-made" else random_split
    sizes = (0, 2, 5)
    built = {s.name: s for s in build_slices(dataset, split, EvaluateConfig(support_sizes=sizes), 4.0)}
    reference = {name: rows for name, rows in _dense_reference(dataset, split, sizes, 4.0).items() if rows}
    assert list(built) == list(reference)
    for name, rows in reference.items():
        s = built[name]
        assert [q.user_id for q in s.queries] == [r[0] for r in rows], name
        assert [q.history for q in s.queries] == [r[1] for r in rows], name
        assert _masks(s).tolist() == [np.broadcast_to(r[2], (s.n_items,)).tolist() for r in rows], name
        assert [p.tolist() for p in s.positives] == [r[3] for r in rows], name
        assert s.n_population == s.n_users == len(rows)


def test_chunks_build_the_same_masks_as_the_whole_slice(random_split) -> None:
    dataset, split = random_split
    warm = next(s for s in build_slices(dataset, split, EvaluateConfig(), 4.0) if s.name == "warm")
    whole = _masks(warm)
    chunks = [
        np.broadcast_to(warm.rows(a, a + 3)[1], (len(warm.rows(a, a + 3)[0]), 25)) for a in range(0, warm.n_users, 3)
    ]
    assert np.array_equal(np.concatenate(chunks), whole)


def test_past_max_users_a_slice_is_a_seeded_sample_of_its_users(random_split) -> None:
    dataset, split = random_split
    full = {s.name: s for s in build_slices(dataset, split, EvaluateConfig(), 4.0)}
    sampled = {s.name: s for s in build_slices(dataset, split, EvaluateConfig(max_users=5), 4.0)}
    again = {s.name: s for s in build_slices(dataset, split, EvaluateConfig(max_users=5), 4.0)}
    other = {s.name: s for s in build_slices(dataset, split, EvaluateConfig(max_users=5, seed=1), 4.0)}
    assert full["warm"].n_users > 5
    for name, s in full.items():
        part = sampled[name]
        assert part.n_users == min(5, s.n_users) and part.n_population == s.n_users
        rows = {q.user_id: r for r, q in enumerate(s.queries)}
        picked = [rows[q.user_id] for q in part.queries]
        assert picked == sorted(picked)  # a subset, in the slice's order
        assert [q.user_id for q in part.queries] == [q.user_id for q in again[name].queries]
        assert all(np.array_equal(part.positives[i], s.positives[r]) for i, r in enumerate(picked))
        assert np.array_equal(_masks(part), _masks(s)[picked])
    assert [q.user_id for q in sampled["warm"].queries] != [q.user_id for q in other["warm"].queries]


def test_max_users_at_or_above_the_slice_size_keeps_every_user(random_split) -> None:
    dataset, split = random_split
    full = build_slices(dataset, split, EvaluateConfig(), 4.0)
    largest = max(s.n_users for s in full)
    exact = build_slices(dataset, split, EvaluateConfig(max_users=largest), 4.0)
    for a, b in zip(full, exact, strict=True):
        assert [q.user_id for q in a.queries] == [q.user_id for q in b.queries]
        assert np.array_equal(_masks(a), _masks(b)) and b.population == a.n_users


def test_sample_rows_and_max_users_config() -> None:
    assert sample_rows(4, 10, 42, "warm").tolist() == [0, 1, 2, 3]
    rows = sample_rows(1000, 10, 42, "warm")
    assert len(set(rows.tolist())) == 10 and rows.tolist() == sorted(rows.tolist())
    assert rows.tolist() == sample_rows(1000, 10, 42, "warm").tolist()
    assert rows.tolist() != sample_rows(1000, 10, 42, "cold-item").tolist()
    with pytest.raises(ConfigError, match="evaluate.max_users"):
        EvaluateConfig(max_users=0)


def test_a_slice_refuses_per_query_masks_and_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="one \\(n_items,\\) mask"):
        Slice("warm", (), np.ones((0, 3), bool), (), ())
    with pytest.raises(ValueError, match="differ in length"):
        Slice("warm", (), np.ones(3, bool), (np.array([0]),), ())

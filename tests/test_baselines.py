"""Each baseline on synthetic data whose right answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_tasks.config import EvaluateConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.split import Split
from recsys_tasks.evaluation.baselines import (
    ALSFoldIn,
    DemographicPopularity,
    GenrePopularity,
    GenreProfile,
    ItemKNN,
    Popularity,
    RandomScorer,
    TextProfile,
    baselines_for,
    parse_genres,
)
from recsys_tasks.protocol.queries import Query, Scorer

ITEMS = ["a", "b", "c", "d"]


def _train(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "rating": [float(r[2]) for r in rows],
            "timestamp": np.arange(len(rows), dtype=np.int64),
        }
    )


def _query(
    user: str = "new", items: tuple[str, ...] = (), text: str | None = None, profile: dict | None = None
) -> Query:
    history = tuple((item, 5.0, t) for t, item in enumerate(items))
    return Query(user, profile or {"age": None, "gender": "", "occupation": "", "zip_code": ""}, history, text)


def test_popularity_ranks_the_most_liked_item_first_and_ignores_low_ratings() -> None:
    train = _train(
        [(f"u{i}", "a", 4) for i in range(3)]
        + [(f"u{i}", "b", 5) for i in range(2)]
        + [(f"v{i}", "b", 2) for i in range(3)]
    )
    scores = Popularity(ITEMS, train).score([_query(), _query("other")])
    assert scores.dtype == np.float32 and scores.shape == (2, 4)
    assert scores[0].tolist() == [3.0, 2.0, 0.0, 0.0]
    assert np.array_equal(scores[0], scores[1])


@pytest.fixture
def demographic() -> tuple[pd.DataFrame, pd.DataFrame]:
    users = pd.DataFrame(
        {
            "user_id": ["f1", "f2", "f3", "f4", "m1", "m2", "m3", "m4", "m5"],
            "age": pd.array([30, 31, 29, 30, 40, 41, 42, 43, 44], dtype="Int64"),
            "gender": ["F"] * 4 + ["M"] * 5,
            "occupation": ["doctor"] * 3 + ["lawyer"] + ["engineer"] * 5,
            "zip_code": [""] * 9,
        }
    )
    train = _train(
        [("f1", "b", 5), ("f2", "b", 5), ("f3", "b", 4), ("f4", "c", 5)] + [(f"m{i}", "a", 5) for i in range(1, 6)]
    )
    return users, train


@pytest.mark.parametrize(
    ("profile", "best"),
    [
        ({"gender": "F", "age": 31, "occupation": "doctor"}, "b"),  # own group: 3 users
        ({"gender": "M", "age": 40, "occupation": "artist"}, "a"),  # no such group: (M, 35-44)
        ({"gender": "", "age": None, "occupation": ""}, "a"),  # nothing known: everyone
    ],
)
def test_demographic_popularity_uses_the_profiles_group(demographic, profile, best) -> None:
    users, train = demographic
    scorer = DemographicPopularity(ITEMS, train, users, min_group=3)
    assert ITEMS[int(np.argmax(scorer.score([_query(profile=profile)])[0]))] == best


def test_demographic_popularity_backs_off_from_a_small_group(demographic) -> None:
    users, train = demographic
    lawyer = {"gender": "F", "age": 28, "occupation": "lawyer"}  # a group of one
    backed_off = DemographicPopularity(ITEMS, train, users, min_group=3).score([_query(profile=lawyer)])[0]
    assert backed_off.tolist() == [0.0, 3.0, 1.0, 0.0]  # (F, 25-34): the doctors and the lawyer
    own = DemographicPopularity(ITEMS, train, users, min_group=1).score([_query(profile=lawyer)])[0]
    assert own.tolist() == [0.0, 0.0, 1.0, 0.0]


def test_item_knn_recommends_the_co_occurring_item() -> None:
    train = _train(
        [("u1", "a", 5), ("u1", "b", 1), ("u2", "a", 3), ("u2", "b", 4), ("u3", "c", 5), ("u3", "d", 5), ("u4", "c", 5)]
    )
    scores = ItemKNN(ITEMS, train).score([_query(items=("a",)), _query()])
    assert scores[0, 1] == pytest.approx(1.0)  # a and b always rated together
    assert scores[0, 0] == 0.0 and scores[0, 2] == 0.0 and scores[0, 3] == 0.0
    assert not scores[1].any()


def _exact_item_knn(item_ids: list[str], train: pd.DataFrame, histories: list[tuple[str, ...]]) -> np.ndarray:
    """Item-kNN by hand, in float64: cosine of the items' binary user columns, an item not its own
    neighbour, summed over each history."""
    users = sorted(set(train["user_id"]))
    matrix = np.zeros((len(users), len(item_ids)))
    for user, item in zip(train["user_id"], train["item_id"]):
        matrix[users.index(user), item_ids.index(item)] = 1.0
    norms = np.linalg.norm(matrix, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.nan_to_num(matrix.T @ matrix / np.outer(norms, norms))
    np.fill_diagonal(cosine, 0.0)
    return np.array([[sum(cosine[item_ids.index(i), j] for i in h) for j in range(len(item_ids))] for h in histories])


def test_item_knn_scores_and_ranks_as_the_exact_item_item_cosine() -> None:
    """implicit's item-item model with every item a neighbour (the default) gives each item the sum
    of its exact cosines with the history, so the same ranking as a dense computation by hand."""
    items = [f"i{j}" for j in range(12)]
    rng = np.random.default_rng(5)
    rows = [
        (f"u{u}", items[j], 1 + int(rng.integers(5)))
        for u in range(30)
        for j in sorted(set(rng.choice(12, int(rng.integers(1, 7)), p=np.linspace(2, 1, 12) / 18).tolist()))
    ]
    train = _train(rows)
    histories = [("i0",), ("i1", "i5"), ("i3", "i4", "i9"), ()]
    scores = ItemKNN(items, train).score([_query(items=h) for h in histories])
    exact = _exact_item_knn(items, train, histories)
    np.testing.assert_allclose(scores, exact, atol=1e-6)
    for got, want in zip(scores, exact):  # best first, ties (equal to 1e-6) by catalog order
        assert (
            np.lexsort((np.arange(12), -np.round(got, 6))).tolist()
            == np.lexsort((np.arange(12), -np.round(want, 6))).tolist()
        )


def _random_train(items: list[str], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return _train(
        [
            (f"u{u}", items[j], 1 + int(rng.integers(5)))
            for u in range(30)
            for j in sorted(set(rng.choice(len(items), int(rng.integers(1, 7))).tolist()))
        ]
    )


@pytest.mark.parametrize("neighbours", [11, 12, 50])
def test_item_knn_with_as_many_neighbours_as_items_is_the_exact_dense_knn(neighbours: int) -> None:
    """A top-N neighbour list with N >= the other items (11 of 12) scores as the dense cosine by hand."""
    items = [f"i{j}" for j in range(12)]
    train = _random_train(items, 11)
    histories = [("i0",), ("i1", "i5"), ("i3", "i4", "i9"), ()]
    scores = ItemKNN(items, train, neighbours).score([_query(items=h) for h in histories])
    np.testing.assert_allclose(scores, _exact_item_knn(items, train, histories), atol=1e-6)


def test_item_knn_top_n_keeps_each_items_n_largest_exact_cosines() -> None:
    """Sparse, at most N per item, and the values kept are the N largest of the item's dense cosine row."""
    items = [f"i{j}" for j in range(12)]
    train = _random_train(items, 3)
    exact = _exact_item_knn(items, train, [(item,) for item in items])  # row i: item i's cosine with each item
    similarity = ItemKNN(items, train, neighbours=3).similarity
    assert similarity.format == "csr" and np.diff(similarity.indptr).max() <= 3
    for row in range(12):
        kept = np.sort(similarity[row].data)[::-1]
        want = np.sort(exact[row])[::-1][: len(kept)]
        np.testing.assert_allclose(kept, want, atol=1e-6)
        assert len(kept) == min(3, int((exact[row] > 0).sum()))


def test_item_knn_with_k_neighbours_keeps_each_items_k_most_similar() -> None:
    """a's neighbours by cosine: b (1.0), then c (1/2), then d (1/√6): with one neighbour, a history
    of a scores b only."""
    train = _train(
        [
            ("u1", "a", 5),
            ("u1", "b", 5),
            ("u2", "a", 5),
            ("u2", "b", 5),
            ("u2", "c", 5),
            ("u3", "c", 5),
            ("u1", "d", 5),
            ("u4", "d", 5),
            ("u5", "d", 5),
        ]
    )
    full = ItemKNN(ITEMS, train).score([_query(items=("a",))])[0]
    one = ItemKNN(ITEMS, train, neighbours=1).score([_query(items=("a",))])[0]
    assert full[0] == 0.0 and full[1] == pytest.approx(1.0) and full[2] == pytest.approx(0.5)
    assert full[3] == pytest.approx(1 / 6**0.5)
    assert one.tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0])


def test_item_knn_refuses_fewer_than_one_neighbour() -> None:
    with pytest.raises(ValueError, match="neighbours must be at least 1"):
        ItemKNN(ITEMS, _train([("u1", "a", 5)]), neighbours=0)


def test_the_evaluate_config_sets_item_knns_neighbours(tiny_snapshot) -> None:
    """``evaluate.item_knn_neighbours`` reaches the baseline the evaluate stage fits (0: every item; default 200)."""
    from recsys_tasks.config import ConfigError

    dataset, split = Dataset.load(tiny_snapshot.out_dir), Split.load(tiny_snapshot.out_dir)
    item_ids = dataset.items["item_id"].astype(str).tolist()
    queries = [_query(items=(item_ids[0],))]
    for neighbours, expected in ((0, ItemKNN(item_ids, split.train)), (1, ItemKNN(item_ids, split.train, 1))):
        fitted = baselines_for(dataset, split, EvaluateConfig(item_knn_neighbours=neighbours), None)["item_knn"]
        np.testing.assert_array_equal(fitted.score(queries), expected.score(queries))
    default = baselines_for(dataset, split, EvaluateConfig(), None)["item_knn"]
    assert EvaluateConfig().item_knn_neighbours == 200
    np.testing.assert_array_equal(default.score(queries), ItemKNN(item_ids, split.train, 200).score(queries))
    with pytest.raises(ConfigError, match="evaluate.item_knn_neighbours"):
        EvaluateConfig(item_knn_neighbours=-1)


# ---------------------------------------------------------------- demographic popularity (`model.popularity`)
def test_demographic_popularity_is_the_same_object_for_the_baseline_and_the_model() -> None:
    from recsys_tasks.model import popularity

    assert DemographicPopularity is popularity.DemographicPopularity
    assert EvaluateConfig().demographic_min_group == popularity.MIN_GROUP


def test_most_liked_lists_known_segments_with_enough_users_most_liked_first(demographic) -> None:
    """Doctors (3 F, 25-34) liked b; the lawyer c; 5 M engineers a; unknown values name no segment."""
    users, train = demographic
    users = pd.concat(
        [
            users,
            pd.DataFrame(
                {
                    "user_id": ["x1", "x2", "x3"],
                    "age": pd.array([None] * 3, dtype="Int64"),
                    "gender": [""] * 3,
                    "occupation": ["doctor"] * 3,
                    "zip_code": "",
                }
            ),
        ]
    )
    train = pd.concat([train, _train([("x1", "d", 5), ("x2", "d", 5), ("x3", "d", 4)])])
    popular = DemographicPopularity(ITEMS, train, users, min_group=3).most_liked(
        [("gender", "age", "occupation"), ("gender",), ("occupation",)], top_n=1
    )
    assert popular[()] == ["a", "b", "d", "c"]  # 5, 3 and 3 (ties by id), 1
    assert popular[("gender=F", "age=25-34", "occupation=doctor")] == ["b"]
    assert popular[("gender=M", "age=35-44", "occupation=engineer")] == ["a"]
    assert popular[("occupation=doctor",)] == ["b"]  # 6 doctors: b and d 3 each, b first by id
    assert ("gender=F",) in popular and ("gender=",) not in popular
    assert not any("lawyer" in "".join(k) for k in popular)  # a group of one


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"min_group": -1}, "min_group must be 0 or more"),
        ({"item_ids": ["a", "b", "a"]}, "item_ids holds duplicates"),
    ],
)
def test_demographic_popularity_refuses_bad_arguments(demographic, kwargs: dict, error: str) -> None:
    users, train = demographic
    arguments = {"item_ids": ITEMS, "train": train, "users": users} | kwargs
    with pytest.raises(ValueError, match=error):
        DemographicPopularity(**arguments)


def test_demographic_popularity_refuses_an_unknown_attribute(demographic) -> None:
    users, train = demographic
    with pytest.raises(ValueError, match="unknown demographic attribute"):
        DemographicPopularity(ITEMS, train, users).most_liked([("zip_code",)], top_n=1)


@pytest.fixture(scope="module")
def als() -> ALSFoldIn:
    # two blocks of taste: g users rate items 0-2, h users rate items 3-5; item 6 is never rated
    rows = [(f"g{u}", str(i), 5) for u in range(6) for i in range(3)]
    rows += [(f"h{u}", str(i), 5) for u in range(6) for i in range(3, 6)]
    return ALSFoldIn([str(i) for i in range(7)], _train(rows), factors=4, iterations=10, regularization=0.1)


def test_als_fold_in_ranks_the_historys_block_first(als) -> None:
    scores = als.score([_query(items=("0",)), _query(items=("4",))])
    assert scores[0, [1, 2]].min() > scores[0, [3, 4, 5]].max()
    assert scores[1, [3, 5]].min() > scores[1, [0, 1, 2]].max()
    assert scores[0, 6] == 0.0  # an item without training clicks has no factors


def test_als_uses_fitted_factors_only_for_an_unchanged_training_user(als) -> None:
    fitted = als.model.user_factors[als.user_row["g0"]]
    same = als.factors_for([_query("g0", ("0", "1", "2"))])[0]
    partial = als.factors_for([_query("g0", ("0",))])[0]
    assert np.array_equal(same, fitted)
    assert not np.array_equal(partial, fitted)
    assert not als.score([_query("g0")]).any()  # no history, nothing to fold in


def test_genre_popularity_lifts_the_stated_genres() -> None:
    train = _train([(f"u{i}", "a", 5) for i in range(3)] + [("u0", "b", 5)])
    genres = [["Drama"], ["Sci-Fi"], ["Horror"], ["Sci-Fi", "Horror"]]
    scorer = GenrePopularity(ITEMS, train, genres)
    stated, plain = scorer.score([_query(text="I like sci-fi and HORROR movies."), _query()])
    assert np.argmax(stated) == 1 and stated[0] == stated.min()
    assert np.argmax(plain) == 0


def test_parse_genres_matches_whole_names_case_insensitively() -> None:
    vocabulary = ["Children's", "Drama", "Film-Noir", "Sci-Fi"]
    assert parse_genres("I like film-noir and children's movies.", vocabulary) == ["Children's", "Film-Noir"]
    assert parse_genres("Dramatic sci-fiction", vocabulary) == []
    assert parse_genres(None, vocabulary) == []


def test_random_is_seeded_per_user_not_per_batch() -> None:
    scorer = RandomScorer(5, seed=3)
    alone = scorer.score([_query("u1")])[0]
    batch = scorer.score([_query("u2"), _query("u1")])
    assert np.array_equal(alone, batch[1]) and not np.array_equal(batch[0], batch[1])
    assert np.array_equal(alone, RandomScorer(5, seed=3).score([_query("u1")])[0])


def test_genre_profile_prefers_items_sharing_the_history_genres() -> None:
    genres = [["Comedy"], ["Comedy", "Romance"], ["Horror"], []]
    scores = GenreProfile(ITEMS, genres).score([_query(items=("a",)), _query()])
    assert scores[0].tolist() == pytest.approx([1.0, 1 / np.sqrt(2), 0.0, 0.0])
    assert not scores[1].any()


def test_text_profile_ranks_by_cosine_to_the_mean_history_embedding() -> None:
    embeddings = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    scores = TextProfile(ITEMS, embeddings).score([_query(items=("b",)), _query(items=("a", "c")), _query()])
    assert np.argsort(-scores[0]).tolist() == [1, 0, 2, 3]
    assert scores[1, 0] == pytest.approx(scores[1, 2])  # the mean of a and c lies halfway between them
    assert np.argmax(scores[1]) == 1 and np.argmin(scores[1]) == 3
    assert not scores[2].any()
    with pytest.raises(ValueError, match="rows"):
        TextProfile(ITEMS, embeddings[:3])


def _tiny_dataset() -> tuple[Dataset, Split]:
    items = pd.DataFrame(
        {
            "item_id": ITEMS,
            "title": ITEMS,
            "year": pd.array([2000] * 4, dtype="Int64"),
            "genres": ["Drama", "Comedy|Drama", "Horror", ""],
            "description": [""] * 4,
            "entity_id": [""] * 4,
        }
    )
    users = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "age": pd.array([20, None], dtype="Int64"),
            "gender": ["F", "M"],
            "occupation": ["x", "y"],
            "zip_code": ["", ""],
        }
    )
    inter = _train([("u1", "a", 5), ("u1", "b", 4), ("u2", "a", 3), ("u2", "c", 5)])
    kg = pd.DataFrame({"head_id": [], "relation_id": [], "tail_id": []})
    split = Split(inter.assign(part="train"), (), (), 0, True)
    return Dataset(inter, users, items, kg), split


@pytest.mark.parametrize("with_text", [True, False])
def test_baselines_for_fits_every_baseline_by_name(with_text: bool) -> None:
    dataset, split = _tiny_dataset()
    text = np.eye(4, 3, dtype=np.float32) if with_text else None
    cfg = EvaluateConfig(als_factors=2, als_iterations=2)
    scorers = baselines_for(dataset, split, cfg, text)
    expected = {
        "popularity",
        "demographic_popularity",
        "item_knn",
        "als",
        "genre_popularity",
        "random",
        "genre_profile",
    } | ({"text_profile"} if with_text else set())
    assert set(scorers) == expected
    queries = [_query("u1", ("a",), "I like Drama movies."), _query("cold")]
    for name, scorer in scorers.items():
        assert isinstance(scorer, Scorer) and scorer.name == name
        scores = scorer.score(queries)
        assert scores.shape == (2, 4) and scores.dtype == np.float32 and np.isfinite(scores).all(), name

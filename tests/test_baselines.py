"""Each baseline on synthetic data whose right answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_tasks.evaluation.baselines import (
    ALSFoldIn, DemographicPopularity, GenrePopularity, GenreProfile, ItemKNN, Popularity, RandomScorer,
    TextProfile, baselines_for, parse_genres,
)
from recsys_tasks.config import EvaluateConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.protocol.queries import Query, Scorer
from recsys_tasks.data.split import Split

ITEMS = ["a", "b", "c", "d"]


def _train(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                         "rating": [float(r[2]) for r in rows], "timestamp": np.arange(len(rows), dtype=np.int64)})


def _query(user: str = "new", items: tuple[str, ...] = (), text: str | None = None,
           profile: dict | None = None) -> Query:
    history = tuple((item, 5.0, t) for t, item in enumerate(items))
    return Query(user, profile or {"age": None, "gender": "", "occupation": "", "zip_code": ""}, history, text)


def test_popularity_ranks_the_most_liked_item_first_and_ignores_low_ratings() -> None:
    train = _train([(f"u{i}", "a", 4) for i in range(3)] + [(f"u{i}", "b", 5) for i in range(2)]
                   + [(f"v{i}", "b", 2) for i in range(3)])
    scores = Popularity(ITEMS, train).score([_query(), _query("other")])
    assert scores.dtype == np.float32 and scores.shape == (2, 4)
    assert scores[0].tolist() == [3.0, 2.0, 0.0, 0.0]
    assert np.array_equal(scores[0], scores[1])


@pytest.fixture
def demographic() -> tuple[pd.DataFrame, pd.DataFrame]:
    users = pd.DataFrame({
        "user_id": ["f1", "f2", "f3", "f4", "m1", "m2", "m3", "m4", "m5"],
        "age": pd.array([30, 31, 29, 30, 40, 41, 42, 43, 44], dtype="Int64"),
        "gender": ["F"] * 4 + ["M"] * 5,
        "occupation": ["doctor"] * 3 + ["lawyer"] + ["engineer"] * 5,
        "zip_code": [""] * 9,
    })
    train = _train([("f1", "b", 5), ("f2", "b", 5), ("f3", "b", 4), ("f4", "c", 5)]
                   + [(f"m{i}", "a", 5) for i in range(1, 6)])
    return users, train


@pytest.mark.parametrize(("profile", "best"), [
    ({"gender": "F", "age": 31, "occupation": "doctor"}, "b"),    # own group: 3 users
    ({"gender": "M", "age": 40, "occupation": "artist"}, "a"),    # no such group: (M, 35-44)
    ({"gender": "", "age": None, "occupation": ""}, "a"),          # nothing known: everyone
])
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
    train = _train([("u1", "a", 5), ("u1", "b", 1), ("u2", "a", 3), ("u2", "b", 4), ("u3", "c", 5),
                    ("u3", "d", 5), ("u4", "c", 5)])
    scores = ItemKNN(ITEMS, train).score([_query(items=("a",)), _query()])
    assert scores[0, 1] == pytest.approx(1.0)  # a and b always rated together
    assert scores[0, 0] == 0.0 and scores[0, 2] == 0.0 and scores[0, 3] == 0.0
    assert not scores[1].any()


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
    items = pd.DataFrame({"item_id": ITEMS, "title": ITEMS, "year": pd.array([2000] * 4, dtype="Int64"),
                          "genres": ["Drama", "Comedy|Drama", "Horror", ""], "description": [""] * 4,
                          "entity_id": [""] * 4})
    users = pd.DataFrame({"user_id": ["u1", "u2"], "age": pd.array([20, None], dtype="Int64"),
                          "gender": ["F", "M"], "occupation": ["x", "y"], "zip_code": ["", ""]})
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
    expected = {"popularity", "demographic_popularity", "item_knn", "als", "genre_popularity", "random",
                "genre_profile"} | ({"text_profile"} if with_text else set())
    assert set(scorers) == expected
    queries = [_query("u1", ("a",), "I like Drama movies."), _query("cold")]
    for name, scorer in scorers.items():
        assert isinstance(scorer, Scorer) and scorer.name == name
        scores = scorer.score(queries)
        assert scores.shape == (2, 4) and scores.dtype == np.float32 and np.isfinite(scores).all(), name

"""The knowledge graph of the tiny snapshot, and its PyKEEN embedding at dimension 4.

Right answers read off ``conftest.py`` and the default split (seed 42): cold users 1 and 5,
cold items 2, 9 and 13; items 1-10 are linked to ``m.film1`` .. ``m.film10``; the training
part holds 12 positives (rating >= 4).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_tasks.artifacts import StageResult, read_json
from recsys_tasks.config import KGConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.split import Split
from recsys_tasks.kg.embed import build_triples, judge_source, kg_embed, load_entity_embeddings
from recsys_tasks.kg.nodes import demographic_nodes

COLD_USERS, COLD_ITEMS = {"1", "5"}, {"2", "9", "13"}


@pytest.fixture(scope="module")
def snapshot_dir(tiny_snapshot: StageResult) -> Path:
    return Path(tiny_snapshot.out_dir)


@pytest.fixture(scope="module")
def data(snapshot_dir: Path) -> tuple[Dataset, Split]:
    return Dataset.load(snapshot_dir), Split.load(snapshot_dir)


@pytest.fixture(scope="module")
def triples(data: tuple[Dataset, Split]) -> pd.DataFrame:
    return build_triples(*data, KGConfig(), positive_threshold=4.0)


@pytest.fixture(scope="module")
def embedded(tiny_kg: StageResult, tiny_kg_checkpoints: Path) -> tuple[StageResult, Path]:
    """The session's real PyKEEN run (conftest's ``tiny_kg``); its checkpoint folder redirected so a
    leaked file can be seen."""
    return tiny_kg, tiny_kg_checkpoints


def _edges(triples: pd.DataFrame, relation: str) -> set[tuple[str, str]]:
    rows = triples[triples["relation"] == relation]
    return set(zip(rows["head"], rows["tail"]))


# ---------------------------------------------------------------- build_triples
def test_linked_freebase_entities_are_replaced_by_item_nodes(triples: pd.DataFrame) -> None:
    got = set(zip(triples["head"], triples["relation"], triples["tail"]))
    assert {
        ("item:1", "film.film.genre", "fb:m.action"),
        ("item:2", "film.film.genre", "fb:m.comedy"),
        ("item:3", "film.film.directed_by", "fb:m.person1"),
        ("fb:m.person1", "film.director.film", "item:4"),
        ("item:5", "film.film.sequel", "item:6"),
        ("item:10", "film.film.country", "fb:m.usa"),
    } <= got
    labels = set(triples["head"]) | set(triples["tail"])
    assert not [label for label in labels if label.startswith("fb:m.film")]  # every linked film became an item


def test_every_item_has_its_genres_and_one_decade(triples: pd.DataFrame, data: tuple[Dataset, Split]) -> None:
    items = data[0].items
    expected_genres = {
        (f"item:{i}", f"genre:{g}") for i, gs in zip(items["item_id"], items["genres"]) for g in gs.split("|")
    }
    assert _edges(triples, "has_genre") == expected_genres
    assert ("item:1", "genre:Comedy") in expected_genres and ("item:2", "genre:Drama") in expected_genres
    decades = _edges(triples, "released_in")
    assert len(decades) == 15 and {h for h, _ in decades} == {f"item:{i}" for i in range(1, 16)}
    assert ("item:9", "decade:1980s") in decades and ("item:10", "decade:1990s") in decades


def test_every_user_cold_ones_included_gets_demographic_edges(triples: pd.DataFrame) -> None:
    for relation in ("has_gender", "has_age", "has_occupation"):
        assert {h for h, _ in _edges(triples, relation)} == {f"user:{u}" for u in range(1, 13)}, relation
    # user 1 (cold): 21, F, engineer; user 12: 65, M, student
    assert ("user:1", "gender:F") in _edges(triples, "has_gender")
    assert ("user:1", "age:18-24") in _edges(triples, "has_age")
    assert ("user:12", "age:56+") in _edges(triples, "has_age")
    assert ("user:12", "occupation:student") in _edges(triples, "has_occupation")


def test_liked_edges_are_exactly_the_training_positives(triples: pd.DataFrame, data: tuple[Dataset, Split]) -> None:
    """Guards against test, cold-user or cold-item interactions leaking into the graph."""
    split = data[1]
    train = split.train
    positives = train[train["rating"] >= 4]
    liked = _edges(triples, "liked")
    assert liked == {(f"user:{u}", f"item:{i}") for u, i in zip(positives["user_id"], positives["item_id"])}
    assert len(liked) == 12
    assert ("user:2", "item:11") in liked  # train, rating 5
    assert ("user:2", "item:7") not in liked  # train, rating 3
    assert ("user:1", "item:10") not in liked  # cold user, rating 5
    assert ("user:10", "item:9") not in liked  # cold item, rating 5
    assert ("user:4", "item:6") not in liked  # warm test part, rating 4
    assert not {h for h, _ in liked} & {f"user:{u}" for u in COLD_USERS}
    assert not {t for _, t in liked} & {f"item:{i}" for i in COLD_ITEMS}


def test_positive_threshold_decides_which_ratings_are_likes(data: tuple[Dataset, Split]) -> None:
    strict = build_triples(*data, KGConfig(), positive_threshold=5.0)
    train = data[1].train
    fives = train[train["rating"] >= 5]
    assert _edges(strict, "liked") == {(f"user:{u}", f"item:{i}") for u, i in zip(fives["user_id"], fives["item_id"])}
    assert 0 < len(fives) < 12


def test_triples_have_no_duplicates(triples: pd.DataFrame) -> None:
    assert not triples.duplicated().any()
    assert list(triples.columns) == ["head", "relation", "tail"]


@pytest.mark.parametrize(
    ("flag", "relations_gone"),
    [
        (
            "include_freebase",
            {"film.film.genre", "film.film.directed_by", "film.director.film", "film.film.sequel", "film.film.country"},
        ),
        ("include_demographics", {"has_gender", "has_age", "has_occupation"}),
        ("include_likes", {"liked"}),
    ],
)
def test_include_flags_switch_their_edge_kind_off(
    data: tuple[Dataset, Split], triples: pd.DataFrame, flag: str, relations_gone: set[str]
) -> None:
    without = build_triples(*data, KGConfig(**{flag: False}), positive_threshold=4.0)
    assert relations_gone <= set(triples["relation"])
    assert not relations_gone & set(without["relation"])
    kept = triples[~triples["relation"].isin(relations_gone)].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        without.sort_values(list(without.columns)).reset_index(drop=True),
        kept.sort_values(list(kept.columns)).reset_index(drop=True),
    )
    if flag == "include_freebase":
        assert not any(label.startswith("fb:") for label in set(without["head"]) | set(without["tail"]))


# ---------------------------------------------------------------- judge_source
def _franchises(scrambled: bool) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """120 films in pairs 2k, 2k+1 liked by the same people; the KG gives each pair a director and a
    genre. ``scrambled``: the link file points every item at another film's entity (a fixed random
    permutation), so the KG's facts describe films other than the ones people liked."""
    n = 120
    films = [f"m.{i}" for i in range(n)]
    entities = list(np.random.default_rng(7).permutation(films)) if scrambled else films
    items = pd.DataFrame({"item_id": [str(i) for i in range(n)], "entity_id": entities})
    kg = [[f"m.{2 * k + j}", "film.film.directed_by", f"m.d{k}"] for k in range(n // 2) for j in (0, 1)]
    kg += [[f"m.{2 * k + j}", "film.film.genre", f"m.g{k % 6}"] for k in range(n // 2) for j in (0, 1)]
    rng = np.random.default_rng(1)
    likes = [
        [f"u{u}", str(2 * k + j), 5.0] for u in range(300) for k in rng.choice(n // 2, 2, replace=False) for j in (0, 1)
    ]
    train = pd.DataFrame(likes, columns=["user_id", "item_id", "rating"]).assign(timestamp=0)
    return items, pd.DataFrame(kg, columns=["head_id", "relation_id", "tail_id"]), train


def test_a_source_whose_links_match_what_is_liked_together_is_kept() -> None:
    items, kg, train = _franchises(scrambled=False)
    cfg, verdict, lifts = judge_source(KGConfig(), items, kg, train)
    assert (cfg, verdict) == (KGConfig(), "kept")
    assert lifts["film.film.directed_by"][0] > 10  # every relation judged under its own id
    assert set(lifts) == {"film.film.directed_by", "film.film.genre"}


def test_a_source_whose_links_point_at_other_films_is_left_out(caplog: pytest.LogCaptureFixture) -> None:
    items, kg, train = _franchises(scrambled=True)
    cfg, verdict, lifts = judge_source(KGConfig(), items, kg, train)
    assert verdict == "left out" and cfg == KGConfig(include_freebase=False)
    assert max(lift for lift, _ in lifts.values()) < KGConfig().freebase_min_lift
    assert "240 triples are left out" in caplog.text and "film.film.directed_by" in caplog.text
    kept, verdict, _ = judge_source(KGConfig(freebase_min_lift=0), items, kg, train)  # the check switched off
    assert (kept, verdict) == (KGConfig(freebase_min_lift=0), "kept")


def test_a_source_too_small_to_judge_or_switched_off_is_kept_unjudged(data: tuple[Dataset, Split]) -> None:
    dataset, split = data
    cfg, verdict, lifts = judge_source(KGConfig(), dataset.items, dataset.kg, split.train)
    assert (cfg, verdict, lifts) == (KGConfig(), "kept (not judged)", {})  # no two items share a KG value
    assert judge_source(KGConfig(include_freebase=False), dataset.items, dataset.kg, split.train)[1:] == ("off", {})
    assert judge_source(KGConfig(), dataset.items, dataset.kg.iloc[:0], split.train)[1:] == ("none", {})


@pytest.mark.slow
def test_the_bundled_movielens_kg_is_left_out(movielens_snapshot: StageResult) -> None:
    """The shipped ml-100k.link points items at other films: no relation's linked items are liked
    together more than random ones (measured 0.75-1.20), so its triples do not enter the graph."""
    snapshot = movielens_snapshot.out_dir
    dataset, split = Dataset.load(snapshot), Split.load(snapshot)
    cfg, verdict, lifts = judge_source(KGConfig(), dataset.items, dataset.kg, split.train)
    assert verdict == "left out" and not cfg.include_freebase
    judged = {r: lift for r, (lift, pairs) in lifts.items() if pairs >= 50}
    assert {"film.film.directed_by", "film.film.genre", "film.film.actor"} <= set(judged)
    assert max(judged.values()) < 1.5


# ---------------------------------------------------------------- demographic_nodes
@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ({"age": 29, "gender": "F", "occupation": "artist"}, ["gender:F", "age:25-34", "occupation:artist"]),
        ({"age": 17, "gender": "", "occupation": "student"}, ["age:under 18", "occupation:student"]),
        ({"age": None, "gender": "M", "occupation": ""}, ["gender:M"]),
        ({"age": pd.NA}, []),
        ({}, []),
    ],
)
def test_demographic_nodes_name_only_known_values(profile: dict, expected: list[str]) -> None:
    assert demographic_nodes(profile) == expected


# ---------------------------------------------------------------- kg_embed
@pytest.mark.slow
def test_kg_embed_writes_one_embedding_row_per_entity(embedded: tuple[StageResult, Path]) -> None:
    result, _ = embedded
    out = Path(result.out_dir)
    embeddings = np.load(out / "embeddings.npy")
    labels = pd.read_parquet(out / "entities.parquet")["label"].tolist()
    triples = pd.read_parquet(out / "triples.parquet")
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(labels), 4)
    assert np.isfinite(embeddings).all()
    assert len(set(labels)) == len(labels)
    assert set(labels) == set(triples["head"]) | set(triples["tail"])  # every entity, held-out triples' too
    row, vectors = load_entity_embeddings(out)
    assert row == {label: i for i, label in enumerate(labels)}
    np.testing.assert_array_equal(vectors, embeddings)
    assert {"item:1", "user:1", "gender:F", "genre:Drama"} <= set(row)


@pytest.mark.slow
def test_kg_embed_metrics_are_finite_ranking_scores(embedded: tuple[StageResult, Path]) -> None:
    result, _ = embedded
    m = result.metrics
    for name in ("mrr", "hits_at_10"):
        assert math.isfinite(m[name]) and 0.0 <= m[name] <= 1.0, name
    assert m["n_entities"] == len(pd.read_parquet(result.path("entities")))
    assert m["n_triples"] == len(pd.read_parquet(result.path("triples")))
    assert 1 <= m["epochs_trained"] <= 2 and math.isfinite(m["final_loss"])
    assert result.info == {"model": "DistMult", "dim": 4, "source_triples": "kept (not judged)"}
    assert m["source_triples"] == 6 and "source_link_lift" not in m  # conftest's KG, too small to judge
    assert read_json(result.path("link_lifts")) == {}
    assert StageResult.load(result.out_dir) == result


@pytest.mark.slow
def test_kg_embed_writes_only_inside_its_out_dir(embedded: tuple[StageResult, Path]) -> None:
    """Guards against PyKEEN's best-weights checkpoint being left in ~/.data/pykeen/checkpoints."""
    result, checkpoints = embedded
    out = Path(result.out_dir)
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    assert not [p for p in checkpoints.rglob("*") if p.is_file()]


@pytest.mark.slow
def test_unknown_kge_model_raises_and_writes_nothing(
    snapshot_dir: Path, tiny_kg_config: KGConfig, tmp_path: Path
) -> None:
    out = tmp_path / "kg"
    with pytest.raises(Exception, match="NoSuchModel|nosuchmodel"):
        kg_embed(dataclasses.replace(tiny_kg_config, model="NoSuchModel"), snapshot_dir, out)
    assert list(tmp_path.iterdir()) == []

"""The knowledge graph of the tiny snapshot, and its PyKEEN embedding at dimension 4; the demographic
values' taste and the items' co-liked partners on hand-made likes.

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
from recsys_tasks.kg.embed import (
    build_triples,
    colike_counts,
    colike_triples,
    eval_ratios,
    group_lifts,
    group_taste_triples,
    judge_source,
    kg_embed,
    load_entity_embeddings,
)
from recsys_tasks.kg.nodes import demographic_nodes, demographic_values

COLD_USERS, COLD_ITEMS = {"1", "5"}, {"2", "9", "13"}


@pytest.fixture(scope="module")
def snapshot_dir(tiny_snapshot: StageResult) -> Path:
    return Path(tiny_snapshot.out_dir)


@pytest.fixture(scope="module")
def data(snapshot_dir: Path) -> tuple[Dataset, Split]:
    return Dataset.load(snapshot_dir), Split.load(snapshot_dir)


USERS_AS_ENTITIES = KGConfig(user_entities=True)
# the default graph with every threshold at its loosest, so the tiny data's few likes give edges of every kind
LOOSE = KGConfig(group_min_support=1, group_min_lift=0.0, colike_min_support=1)


@pytest.fixture(scope="module")
def triples(data: tuple[Dataset, Split]) -> pd.DataFrame:
    return build_triples(*data, USERS_AS_ENTITIES, positive_threshold=4.0)


@pytest.fixture(scope="module")
def loose(data: tuple[Dataset, Split]) -> pd.DataFrame:
    return build_triples(*data, LOOSE, positive_threshold=4.0)


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
    strict = build_triples(*data, USERS_AS_ENTITIES, positive_threshold=5.0)
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
    without = build_triples(*data, dataclasses.replace(USERS_AS_ENTITIES, **{flag: False}), positive_threshold=4.0)
    assert relations_gone <= set(triples["relation"])
    assert not relations_gone & set(without["relation"])
    kept = triples[~triples["relation"].isin(relations_gone)].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        without.sort_values(list(without.columns)).reset_index(drop=True),
        kept.sort_values(list(kept.columns)).reset_index(drop=True),
    )
    if flag == "include_freebase":
        assert not any(label.startswith("fb:") for label in set(without["head"]) | set(without["tail"]))


# ---------------------------------------------------------------- the default graph: no user entities
def test_the_default_graph_has_no_user_entities_and_every_demographic_value(
    loose: pd.DataFrame, data: tuple[Dataset, Split]
) -> None:
    dataset, _ = data
    labels = set(loose["head"]) | set(loose["tail"])
    assert not [label for label in labels if label.startswith("user:")]
    assert {"liked", "has_gender", "has_age", "has_occupation"}.isdisjoint(set(loose["relation"]))
    values = {n for p in dataset.users.to_dict("records") for n in demographic_nodes(p)}  # cold users' too
    assert _edges(loose, "value_of") == {(v, f"attribute:{v.split(':')[0]}") for v in values}
    assert ("gender:F", "attribute:gender") in _edges(loose, "value_of")
    assert ("age:56+", "attribute:age") in _edges(loose, "value_of")  # user 12 (65) only


def test_group_likes_and_colikes_come_from_training_positives_only(
    loose: pd.DataFrame, data: tuple[Dataset, Split]
) -> None:
    """Guards against test, cold-user or cold-item interactions leaking into the graph."""
    dataset, split = data
    train = split.train
    positives = train[train["rating"] >= 4]
    nodes = {r["user_id"]: demographic_nodes(r) for r in dataset.users.to_dict("records")}
    possible = {(n, f"item:{i}") for u, i in zip(positives["user_id"], positives["item_id"]) for n in nodes[u]}
    likes = _edges(loose, "likes")
    assert likes and likes <= possible
    assert ("gender:F", "item:11") in likes  # user 2 (F) liked item 11 in training
    liked_items = {f"item:{i}" for i in positives["item_id"]}
    coliked = _edges(loose, "coliked")
    assert {a for a, _ in coliked} | {b for _, b in coliked} <= liked_items
    assert not (liked_items | {t for _, t in likes}) & {f"item:{i}" for i in COLD_ITEMS}


def test_default_thresholds_leave_out_what_too_few_users_share(data: tuple[Dataset, Split]) -> None:
    """12 training positives: no item is liked by 5 users of one value; users 6 and 11 both like 8 then 10, users 3
    and 8 both 10 then 12: the only pairs two users co-like."""
    default = build_triples(*data, KGConfig(), positive_threshold=4.0)
    assert not _edges(default, "likes")
    assert _edges(default, "coliked") == {
        ("item:8", "item:10"),
        ("item:10", "item:8"),
        ("item:10", "item:12"),
        ("item:12", "item:10"),
    }
    assert len(_edges(default, "value_of")) == 2 + 6 + 3  # F, M; ages 21..65: every band but under 18; 3 jobs


@pytest.mark.parametrize(
    ("flag", "relations_gone"), [("include_demographics", {"value_of", "likes"}), ("include_likes", {"coliked"})]
)
def test_default_graph_include_flags_switch_their_edge_kind_off(
    data: tuple[Dataset, Split], loose: pd.DataFrame, flag: str, relations_gone: set[str]
) -> None:
    without = build_triples(*data, dataclasses.replace(LOOSE, **{flag: False}), positive_threshold=4.0)
    assert relations_gone <= set(loose["relation"])
    kept = loose[~loose["relation"].isin(relations_gone)]
    assert set(zip(without["head"], without["relation"], without["tail"])) == set(
        zip(kept["head"], kept["relation"], kept["tail"])
    )


def test_demographic_values_are_demographic_nodes_of_every_user() -> None:
    users = pd.DataFrame(
        {
            "user_id": ["1", "2", "3"],
            "age": pd.array([29, None, 17], dtype="Int64"),
            "gender": ["F", "M", ""],
            "occupation": ["artist", "", "student"],
        }
    )
    values = demographic_values(users)
    for user in users.to_dict("records"):
        assert sorted(values.loc[values["user_id"] == user["user_id"], "node"]) == sorted(demographic_nodes(user))
    assert set(zip(values["user_id"], values["attribute"], values["node"])) == {
        ("1", "gender", "gender:F"),
        ("1", "age", "age:25-34"),
        ("1", "occupation", "occupation:artist"),
        ("2", "gender", "gender:M"),
        ("3", "age", "age:under 18"),
        ("3", "occupation", "occupation:student"),
    }


def _groups() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Users 1-3 and 7 are F, 4-6 M, 8 X (cold: no training row). Likes: A by 1, 2, 3; B by 1, 4, 5, 6; C by 1-6;
    user 7 has only a disliked training row and user 8's like is not in training. 7 training users, so the rate
    of A among all is 3/7, among F 3/4: lift 1.75; B among M: 1 / (4/7) = 1.75; C among M 1 / (6/7) = 1.1667."""
    users = pd.DataFrame(
        {"user_id": [str(u) for u in range(1, 9)], "gender": ["F"] * 3 + ["M"] * 3 + ["F", "X"], "age": pd.NA}
    )
    likes = {"A": [1, 2, 3], "B": [1, 4, 5, 6], "C": [1, 2, 3, 4, 5, 6]}
    rows = [(str(u), i, 5.0, 0) for i, us in likes.items() for u in us] + [("7", "A", 2.0, 0)]
    train = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return users, train, train[train["rating"] >= 4]


def test_group_lifts_are_the_groups_positive_rate_over_everyones() -> None:
    users, train, liked = _groups()
    lifts = group_lifts(demographic_values(users), train, liked).set_index(["node", "item_id"])
    assert len(lifts) == 5  # F: A, B, C; M: B, C (X has no training user)
    assert lifts.loc[("gender:F", "A"), "support"] == 3
    assert lifts.loc[("gender:F", "A"), "lift"] == pytest.approx((3 / 4) / (3 / 7))
    assert lifts.loc[("gender:F", "B"), "lift"] == pytest.approx((1 / 4) / (4 / 7))
    assert lifts.loc[("gender:M", "B"), "lift"] == pytest.approx(1 / (4 / 7))
    assert lifts.loc[("gender:M", "C"), "lift"] == pytest.approx(1 / (6 / 7))
    assert lifts.loc[("gender:F", "C"), "support"] == 3


@pytest.mark.parametrize(
    ("top_n", "min_lift", "min_support", "expected"),
    [
        (1, 1.2, 3, {("gender:F", "item:A"), ("gender:M", "item:B")}),
        (2, 1.1, 3, {("gender:F", "item:A"), ("gender:M", "item:B"), ("gender:M", "item:C")}),
        (1, 1.1, 4, set()),  # no value's users like any item 4 times
        (5, 2.0, 1, set()),  # no lift reaches 2
    ],
)
def test_group_taste_keeps_the_top_lifts_with_enough_support(
    top_n: int, min_lift: float, min_support: int, expected: set[tuple[str, str]]
) -> None:
    users, train, liked = _groups()
    cfg = KGConfig(group_top_n=top_n, group_min_lift=min_lift, group_min_support=min_support)
    got = group_taste_triples(demographic_values(users), train, liked, cfg)
    assert set(zip(got["head"], got["tail"])) == expected and set(got["relation"]) <= {"likes"}


def _histories() -> pd.DataFrame:
    """Liked in time order: user 1 A, B, C; user 2 A, B; user 3 C, A (rows shuffled)."""
    rows = [("1", "A", 1), ("1", "B", 2), ("1", "C", 3), ("2", "A", 5), ("2", "B", 6), ("3", "C", 1), ("3", "A", 9)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(rating=5.0)
    return frame.sample(frac=1.0, random_state=3).reset_index(drop=True)


@pytest.mark.parametrize(("window", "ac"), [(1, 1), (2, 2)])
def test_colike_counts_pairs_liked_within_the_window(window: int, ac: int) -> None:
    counts = colike_counts(_histories(), window)
    got = {frozenset((a, b)): (n, c) for a, b, n, c in counts.itertuples(index=False)}
    assert set(got) == {frozenset("AB"), frozenset("BC"), frozenset("AC")}
    assert got[frozenset("AB")] == pytest.approx((2, 2 / np.sqrt(3 * 2)))  # users 1 and 2, likers A 3, B 2
    assert got[frozenset("BC")] == pytest.approx((1, 1 / np.sqrt(2 * 2)))
    assert got[frozenset("AC")] == pytest.approx((ac, ac / np.sqrt(3 * 2)))  # user 3 next to; user 1 two apart


def test_colike_triples_keep_each_items_top_partners() -> None:
    top1 = colike_triples(_histories(), KGConfig(colike_window=1, colike_top_k=1, colike_min_support=1))
    assert set(zip(top1["head"], top1["tail"])) == {("item:A", "item:B"), ("item:B", "item:A"), ("item:C", "item:B")}
    assert set(top1["relation"]) == {"coliked"}
    strict = colike_triples(_histories(), KGConfig(colike_window=1, colike_top_k=5, colike_min_support=2))
    assert set(zip(strict["head"], strict["tail"])) == {("item:A", "item:B"), ("item:B", "item:A")}


@pytest.mark.parametrize(
    ("n", "cap", "expected"),
    [(1000, 2000, 0.005), (1_000_000, 2000, 0.002), (1_000_000, 0, 0.005), (0, 2000, 0.005)],
)
def test_eval_ratios_cap_validation_and_test_triples(n: int, cap: int, expected: float) -> None:
    ratios = eval_ratios(n, KGConfig(max_eval_triples=cap))
    assert ratios == pytest.approx([1 - 2 * expected, expected, expected])


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
    assert {"item:1", "gender:F", "age:18-24", "occupation:student", "genre:Drama"} <= set(row)
    assert not [label for label in row if label.startswith("user:")]


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
def test_kg_embed_evaluates_at_most_max_eval_triples_each(
    snapshot_dir: Path, tiny_kg_config: KGConfig, tmp_path: Path
) -> None:
    cfg = dataclasses.replace(tiny_kg_config, epochs=1, eval_fraction=0.2, max_eval_triples=2)
    result = kg_embed(cfg, snapshot_dir, tmp_path / "kg")
    assert 1 <= result.metrics["n_eval_triples"] <= 4 < 0.2 * result.metrics["n_triples"]


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

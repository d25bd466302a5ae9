"""Evaluation rows, the report table and the flat metrics, on slices with known answers."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np
import pytest

from recsys_tasks.evaluation.table import (
    beyond_table,
    evaluate_slices,
    flat_metrics,
    mlflow_safe,
    summary_table,
    to_markdown,
)
from recsys_tasks.protocol.beyond import genre_matrix, training_popularity
from recsys_tasks.protocol.queries import Query
from recsys_tasks.protocol.slices import Slice

PROFILE = {"age": None, "gender": "", "occupation": "", "zip_code": ""}


class Fixed:
    """A scorer returning a fixed row per user id (a stand-in for a fitted ranker)."""

    def __init__(self, name: str, rows: dict[str, Sequence[float]]) -> None:
        self.name, self.rows = name, rows

    def score(self, queries: Sequence[Query]) -> np.ndarray:
        return np.array([self.rows[q.user_id] for q in queries], dtype=np.float32)


def _slice(
    name: str,
    users: list[str],
    candidates: np.ndarray,
    positives: list[list[int]],
    baselines: tuple[str, ...],
    excluded: list[list[int]] | None = None,
    population: int | None = None,
) -> Slice:
    return Slice(
        name,
        tuple(Query(u, PROFILE, ()) for u in users),
        candidates,
        tuple(np.array(p, dtype=np.int64) for p in positives),
        baselines,
        tuple(np.array(e, dtype=np.int64) for e in excluded or ()),
        population,
    )


USERS = ["u0", "u1", "u2"]
COLD_USER = _slice("cold-user@0", USERS, np.ones(4, bool), [[0], [1], [2]], ("popularity",))
COLD_ITEM = _slice("cold-item", USERS[:2], np.array([False, False, True, True]), [[2], [3]], ("random", "text_profile"))
WARM = _slice("warm", USERS, np.ones(4, bool), [[3], [3], [0]], ("popularity",), excluded=[[], [0], [1, 2]])
SLICES = [COLD_USER, COLD_ITEM, WARM]

POPULARITY = Fixed("popularity", {u: [4, 3, 2, 1] for u in USERS})  # the positive at rank 1, 2, 3
RANDOM = Fixed("random", {u: [0, 0, 1, 0] for u in USERS})
MODEL = Fixed("model", {"u0": [1, 0, 0, 0], "u1": [0, 1, 0, 1], "u2": [0, 0, 1, 0]})  # perfect on cold-user@0
# Training interactions per item (the 10% head is ceil(0.4) = 1 item: item 3) and genres A, AB, B, none.
COUNTS = np.array([1.0, 2.0, 3.0, 9.0])
GENRES = genre_matrix([["A"], ["A", "B"], ["B"], []])
INFORMATION = -np.log2((COUNTS + 1) / (COUNTS.sum() + 4))  # add-one smoothed self-information


@pytest.fixture
def frame():
    return evaluate_slices(
        SLICES, {"popularity": POPULARITY, "random": RANDOM}, MODEL, k=2, item_popularity=COUNTS, item_genres=GENRES
    )


def test_one_row_per_slice_and_ranker(frame) -> None:
    assert list(zip(frame["slice"], frame["ranker"])) == [
        ("cold-user@0", "popularity"),
        ("cold-user@0", "model"),
        ("cold-item", "random"),
        ("cold-item", "model"),
        ("warm", "popularity"),
        ("warm", "model"),
    ]
    assert frame["users"].tolist() == [3, 3, 2, 2, 3, 3]
    assert frame["evaluated"].tolist() == frame["users"].tolist()
    row = frame.set_index(["slice", "ranker"])
    assert row.loc[("cold-user@0", "popularity"), "ndcg@2"] == pytest.approx((1 + 1 / np.log2(3) + 0) / 3)
    assert row.loc[("cold-user@0", "popularity"), "recall@2"] == pytest.approx(2 / 3)
    assert row.loc[("cold-user@0", "model"), "ndcg@2"] == pytest.approx(1.0)


def test_auc_only_on_cold_item(frame) -> None:
    auc = frame.set_index(["slice", "ranker"])["auc"]
    assert auc[("cold-item", "random")] == pytest.approx(0.5)  # u0 right (1.0), u1 wrong (0.0)
    assert auc[("cold-item", "model")] == pytest.approx(0.75)  # u0 tie (0.5), u1 right (1.0)
    assert auc.drop(index="cold-item", level="slice").isna().all()


def test_missing_baseline_is_skipped_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        frame = evaluate_slices([COLD_ITEM], {"random": RANDOM}, None, k=2)
    assert frame["ranker"].tolist() == ["random"]
    assert "text_profile" in caplog.text


def test_chunking_does_not_change_the_result(frame) -> None:
    chunked = evaluate_slices(
        SLICES,
        {"popularity": POPULARITY, "random": RANDOM},
        MODEL,
        k=2,
        chunk_size=1,
        item_popularity=COUNTS,
        item_genres=GENRES,
    )
    for column in ("ndcg@2", "recall@2", "auc", "coverage@2", "novelty@2", "diversity@2", "pop_share@2"):
        np.testing.assert_allclose(chunked[column], frame[column])


def test_beyond_accuracy_of_each_ranker_on_each_slice(frame) -> None:
    row = frame.set_index(["slice", "ranker"])
    # popularity on cold-user@0: [0, 1] for all three users.
    cold = row.loc[("cold-user@0", "popularity")]
    assert cold["coverage@2"] == pytest.approx(2 / 4)
    assert cold["novelty@2"] == pytest.approx((INFORMATION[0] + INFORMATION[1]) / 2)
    assert cold["diversity@2"] == pytest.approx(0.5)  # 1 - |A| / |A, B|
    assert cold["pop_share@2"] == 0.0
    # popularity on warm, each user's history taken out: [0, 1], [1, 2], [0, 3].
    warm = row.loc[("warm", "popularity")]
    assert warm["coverage@2"] == 1.0
    assert warm["pop_share@2"] == pytest.approx((0 + 0 + 1 / 2) / 3)  # item 3 is the head
    assert warm["diversity@2"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)  # AB-B shares 1 of 2; A-none nothing
    expected_novelty = np.mean([INFORMATION[[0, 1]].mean(), INFORMATION[[1, 2]].mean(), INFORMATION[[0, 3]].mean()])
    assert warm["novelty@2"] == pytest.approx(expected_novelty)


def test_slots_past_a_slices_candidates_are_empty_not_recommended() -> None:
    """cold-item ranks items 2 and 3 only: a top 3 lists two items, and nothing else is covered."""
    result = evaluate_slices([COLD_ITEM], {"random": RANDOM}, None, k=3, item_popularity=COUNTS, item_genres=GENRES)
    first = result.iloc[0]
    assert first["coverage@3"] == pytest.approx(2 / 4)
    assert first["pop_share@3"] == pytest.approx(0.5) and first["diversity@3"] == pytest.approx(1.0)


def test_without_popularity_the_beyond_columns_are_there_and_empty() -> None:
    result = evaluate_slices([COLD_USER], {"popularity": POPULARITY}, None, k=2)
    assert result[["coverage@2", "novelty@2", "diversity@2", "pop_share@2"]].isna().all().all()
    assert "cold-user@0/coverage/popularity" not in flat_metrics(result)
    no_genres = evaluate_slices([COLD_USER], {"popularity": POPULARITY}, None, k=2, item_popularity=COUNTS)
    assert np.isnan(no_genres["diversity@2"].iloc[0]) and no_genres["coverage@2"].iloc[0] == 0.5


def test_beyond_table_has_a_row_per_slice_and_ranker(frame) -> None:
    table = beyond_table(frame)
    assert list(table.columns) == ["slice", "ranker", "coverage@2", "novelty@2", "diversity@2", "pop_share@2"]
    assert list(zip(table["slice"], table["ranker"])) == list(zip(frame["slice"], frame["ranker"]))
    lines = to_markdown(table).strip().split("\n")
    assert len(lines) == 2 + len(frame) and len({len(line) for line in lines}) == 1
    assert lines[2].startswith("| cold-user@0 | popularity |") and " 0.5000 |" in lines[2]


def test_a_querys_exclusions_are_never_ranked() -> None:
    """u0's two best items are its history: without them the positive (item 0) is first."""
    model = Fixed("model", {"u0": [0.2, 0.1, 1.0, 0.5]})
    with_history = _slice("warm", ["u0"], np.ones(4, bool), [[0]], (), excluded=[[2, 3]])
    without = _slice("warm", ["u0"], np.ones(4, bool), [[0]], ())
    assert evaluate_slices([with_history], {}, model, k=1)["ndcg@1"].tolist() == [1.0]
    assert evaluate_slices([without], {}, model, k=1)["ndcg@1"].tolist() == [0.0]


def test_the_95_interval_is_the_normal_approximation_over_users(frame) -> None:
    """popularity on cold-user@0: NDCG@2 of 1, 1/log2(3), 0 over 3 users; a perfect model has width 0."""
    values = np.array([1.0, 1 / np.log2(3), 0.0])
    row = frame.set_index(["slice", "ranker"])
    assert row.loc[("cold-user@0", "popularity"), "ndcg_ci95"] == pytest.approx(
        1.959964 * values.std(ddof=1) / np.sqrt(3), rel=1e-6
    )
    assert row.loc[("cold-user@0", "model"), "ndcg_ci95"] == 0.0
    one = _slice("cold-user@0", ["u0"], np.ones(4, bool), [[0]], ())
    assert np.isnan(evaluate_slices([one], {}, MODEL, k=2)["ndcg_ci95"].iloc[0])  # one user: no interval


def test_a_sampled_slice_reports_its_users_and_those_evaluated(frame) -> None:
    sampled = _slice("cold-user@0", USERS[:2], np.ones(4, bool), [[0], [1]], ("popularity",), population=40)
    result = evaluate_slices([sampled], {"popularity": POPULARITY}, MODEL, k=2)
    assert result["users"].tolist() == [40, 40] and result["evaluated"].tolist() == [2, 2]
    table = summary_table(result)
    assert table[["users", "evaluated"]].values.tolist() == [[40, 2]]
    flat = flat_metrics(result)
    assert flat["cold-user@0/users"] == 40.0 and flat["cold-user@0/users_evaluated"] == 2.0
    assert flat["cold-user@0/ndcg_ci95/popularity"] == pytest.approx(
        1.959964 * np.std([1.0, 1 / np.log2(3)], ddof=1) / np.sqrt(2), rel=1e-6
    )


def test_bad_scores_name_the_ranker() -> None:
    wrong = Fixed("wrong", {u: [1, 2, 3] for u in USERS})
    with pytest.raises(ValueError, match="wrong.*shape"):
        evaluate_slices([COLD_USER], {"popularity": wrong}, None, k=2)
    broken = Fixed("broken", {u: [np.nan, 1, 2, 3] for u in USERS})
    with pytest.raises(ValueError, match="broken.*NaN"):
        evaluate_slices([COLD_USER], {}, broken, k=2)


def test_summary_table_compares_the_model_with_the_best_baseline(frame) -> None:
    table = summary_table(frame)
    assert list(table.columns) == [
        "slice",
        "users",
        "evaluated",
        "popularity",
        "random",
        "model",
        "model ±95%",
        "model / best baseline",
    ]
    assert table["slice"].tolist() == ["cold-user@0", "cold-item", "warm"]
    first = table.iloc[0]
    assert first["model / best baseline"] == pytest.approx(1.0 / first["popularity"])
    assert np.isnan(first["random"])  # random is not a baseline of cold-user@0


def test_summary_without_a_model_has_no_model_columns() -> None:
    table = summary_table(evaluate_slices(SLICES, {"popularity": POPULARITY}, None, k=2))
    assert list(table.columns) == ["slice", "users", "evaluated", "popularity"]


def test_markdown_is_a_hand_formatted_pipe_table(frame) -> None:
    text = to_markdown(summary_table(frame))
    lines = text.strip().split("\n")
    assert len(lines) == 2 + 3
    assert lines[0].startswith("| slice") and set(lines[1]) <= set("|:-")
    assert len({len(line) for line in lines}) == 1  # columns aligned
    assert lines[2].endswith(" 1.84x |")  # 1 / 0.5436, the ratio to two places
    assert " 0.5436 |" in lines[2]  # popularity's NDCG@2 on cold-user@0, four places
    assert " ±0.0000 |" in lines[2]  # the model's 95% half-width: perfect on every user


def test_flat_metrics_keys_and_cold_mean(frame) -> None:
    flat = flat_metrics(frame)
    assert flat["cold-user@0/ndcg/model"] == pytest.approx(1.0)
    assert flat["cold-user@0/ndcg/best_baseline"] == pytest.approx(flat["cold-user@0/ndcg/popularity"])
    assert flat["cold-item/auc/model"] == pytest.approx(0.75)
    assert flat["warm/users"] == 3.0
    assert "warm/auc/model" not in flat
    assert flat["warm/pop_share/popularity"] == pytest.approx(1 / 6)
    assert flat["cold-user@0/coverage/popularity"] == pytest.approx(0.5)
    assert {f"warm/{m}/model" for m in ("coverage", "novelty", "diversity", "pop_share")} <= flat.keys()
    assert not [k for k in flat if k.split("/")[1:2] in (["coverage"], ["pop_share"]) and k.endswith("best_baseline")]
    cold = [flat["cold-user@0/ndcg/model"], flat["cold-item/ndcg/model"]]  # warm is not cold
    assert flat["cold_mean_ndcg"] == pytest.approx(np.mean(cold))
    assert all(isinstance(v, float) for v in flat.values())


def test_mlflow_safe_names_pass_mlflows_rule(frame) -> None:
    allowed = re.compile(r"^[/\w.\- :]*$")  # MLflow's metric-name rule
    for key in flat_metrics(frame):
        assert allowed.match(mlflow_safe(key)), key
    assert mlflow_safe("cold-user@0+text/ndcg/model") == "cold-user_at_0_plus_text/ndcg/model"


@pytest.mark.slow
def test_baselines_on_the_real_snapshot(movielens_snapshot) -> None:
    """ML-100K end to end: the protocol holds on real data and the baselines behave as expected."""
    from recsys_tasks.config import EvaluateConfig
    from recsys_tasks.data.dataset import Dataset
    from recsys_tasks.data.split import Split
    from recsys_tasks.evaluation.baselines import baselines_for
    from recsys_tasks.protocol.slices import build_slices

    dataset, split = Dataset.load(movielens_snapshot.out_dir), Split.load(movielens_snapshot.out_dir)
    cfg = EvaluateConfig()
    slices = {s.name: s for s in build_slices(dataset, split, cfg, 4.0)}
    assert list(slices) == [
        "cold-user@0",
        "cold-user@5",
        "cold-user@10",
        "cold-user@20",
        "cold-user@0+text",
        "cold-item",
        "warm",
    ]
    cold_rows = np.isin(dataset.items["item_id"].to_numpy(), list(split.cold_items))
    assert np.array_equal(slices["cold-item"].candidates, cold_rows)
    train_users = set(split.train["user_id"])
    for s in slices.values():
        if s.name.startswith("cold-user"):
            assert not {q.user_id for q in s.queries} & train_users
        if s.name == "cold-user@5":
            assert all(len(q.history) == 5 for q in s.queries)
            _, masks, _ = s.rows(0, s.n_users)
            assert (masks.sum(axis=1) == len(cold_rows) - 5).all()  # every item but the five of the support

    item_text = np.random.default_rng(0).normal(size=(len(dataset.items), 16)).astype(np.float32)
    item_ids = dataset.items["item_id"].astype(str).tolist()
    frame = evaluate_slices(
        list(slices.values()),
        baselines_for(dataset, split, cfg, item_text),
        None,
        cfg.k,
        item_popularity=training_popularity(item_ids, split.train),
        item_genres=genre_matrix(dataset.genre_lists()),
    )
    ndcg = frame.set_index(["slice", "ranker"])[f"ndcg@{cfg.k}"]
    assert ndcg.between(0, 1).all()
    assert ndcg[("warm", "als")] > ndcg[("warm", "popularity")]
    assert ndcg[("cold-item", "genre_profile")] > ndcg[("cold-item", "random")]
    assert frame.set_index(["slice", "ranker"]).loc[("cold-item", "random"), "auc"] == pytest.approx(0.5, abs=0.03)
    # Beyond accuracy: popularity lists the same 20 items to everyone, all from the popular head;
    # random over the cold items covers nearly all of them and is more novel than any popularity list.
    row = frame.set_index(["slice", "ranker"])
    assert row.loc[("cold-user@0", "popularity"), f"coverage@{cfg.k}"] == pytest.approx(cfg.k / len(item_ids))
    assert row.loc[("cold-user@0", "popularity"), f"pop_share@{cfg.k}"] == 1.0
    assert row.loc[("cold-item", "random"), f"coverage@{cfg.k}"] > 0.9 * cold_rows.mean()
    assert row.loc[("cold-item", "random"), f"pop_share@{cfg.k}"] == 0.0  # never-trained items are never head
    assert row.loc[("cold-item", "random"), f"novelty@{cfg.k}"] > row.loc[("warm", "popularity"), f"novelty@{cfg.k}"]
    assert row[f"diversity@{cfg.k}"].between(0, 1).all()

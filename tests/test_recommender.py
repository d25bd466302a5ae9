"""The session's tiny bundle (PyKEEN dim 4, a tiny random BERT, hybrid dim 4, 2 epochs) answering
queries and requests.

Known from the tiny data and the default split: user 3's training history is items 10, 12, 14, 1
(oldest first); users 1 and 5 are cold (profile only); items 2, 9 and 13 are cold (no ID row).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_tasks.artifacts import StageResult
from recsys_tasks.config import FinetuneConfig
from recsys_tasks.model.recommender import Recommender, UnknownIdError
from recsys_tasks.protocol.queries import Query

MAX_HISTORY = 5
N_ITEMS = 15
USER_3_HISTORY = ("10", "12", "14", "1")
PROFILE = {"age": 29, "gender": "F", "occupation": "student", "zip_code": "10111"}
TASTE = "I like Action and Drama movies."


@pytest.fixture(scope="module")
def bundle_dir(tiny_bundle: StageResult, tiny_finetune_config: FinetuneConfig) -> Path:
    """The session's tiny finetune bundle folder (shared: a test that changes it copies it first)."""
    assert tiny_finetune_config.max_history == MAX_HISTORY
    return tiny_bundle.path("bundle")


@pytest.fixture(scope="module")
def rec(bundle_dir: Path) -> Recommender:
    return Recommender.load(bundle_dir)


def _history(items: list[str]) -> tuple[tuple[str, float, int], ...]:
    return tuple((item, 4.0, 880_000_000 + n) for n, item in enumerate(items))


def _catalog_cycle(n: int) -> list[str]:
    return [str(i % N_ITEMS + 1) for i in range(n)]


# ---------------------------------------------------------------- score
@pytest.mark.slow
def test_score_has_one_row_per_query_over_the_whole_catalog(rec: Recommender) -> None:
    queries = [Query("3", PROFILE, _history(["1", "3"])), Query("new", {}, ()), Query("x", PROFILE, (), TASTE)]
    scores = rec.score(queries)
    assert scores.shape == (3, N_ITEMS) and scores.dtype == np.float32 and np.isfinite(scores).all()
    assert rec.score([]).shape == (0, N_ITEMS)
    assert rec.item_ids == [str(i) for i in range(1, N_ITEMS + 1)]  # catalog order


@pytest.mark.slow
@pytest.mark.parametrize("n_history", [0, 5, 20])
@pytest.mark.parametrize("text", [None, TASTE, "I like Sci-Fi and Horror movies."])
def test_any_support_size_with_or_without_text_is_scored(rec: Recommender, n_history: int, text: str | None) -> None:
    scores = rec.score([Query("cold", PROFILE, _history(_catalog_cycle(n_history)), text)])
    assert scores.shape == (1, N_ITEMS) and np.isfinite(scores).all()


@pytest.mark.slow
def test_only_the_latest_max_history_items_count(rec: Recommender) -> None:
    long = _history(_catalog_cycle(20))
    full, last = rec.score([Query("u", PROFILE, long), Query("u", PROFILE, long[-MAX_HISTORY:])], fused=False)
    np.testing.assert_allclose(full, last, rtol=1e-5, atol=1e-7)  # same inputs, float32 summation order aside


@pytest.mark.slow
def test_history_and_text_change_the_scores(rec: Recommender) -> None:
    bare, with_history, with_text = rec.score(
        [Query("u", PROFILE, ()), Query("u", PROFILE, _history(["1", "4", "8"])), Query("u", PROFILE, (), TASTE)]
    )
    assert not np.allclose(bare, with_history) and not np.allclose(bare, with_text)


def test_a_disliked_history_item_weighs_the_models_learned_weight_in_both_towers(bundle_dir: Path) -> None:
    """A history item rated below the positive threshold is pooled with the model's weight, an
    unrated click as a liked item; the NumPy tower (CPU serving) and the module agree."""
    rec = Recommender.load(bundle_dir)
    liked, mixed, clicks = (
        Query("u", PROFILE, tuple((i, r, 880_000_000 + n) for n, (i, r) in enumerate(h)))
        for h in (
            [("1", 5.0), ("4", 4.0), ("8", 5.0)],
            [("1", 5.0), ("4", 1.0), ("8", 5.0)],
            [("1", 0.0), ("4", 0.0), ("8", 0.0)],
        )
    )
    with torch.no_grad():
        rec.model.disliked_log_weight.fill_(0.0)  # a weight of 1: the ratings do not matter
    rec.refresh()
    np.testing.assert_allclose(rec.score([mixed], fused=False), rec.score([liked], fused=False), atol=1e-6)
    with torch.no_grad():
        rec.model.disliked_log_weight.fill_(-3.0)
    rec.refresh()
    numpy_tower = rec.score([liked, mixed, clicks], fused=False)
    assert not np.allclose(numpy_tower[1], numpy_tower[0], atol=1e-4)
    np.testing.assert_allclose(numpy_tower[2], numpy_tower[0], atol=1e-6)  # clicks count as liked
    rec.scoring.cpu_tower = None  # the module's own arithmetic, as on a GPU
    np.testing.assert_allclose(rec.score([liked, mixed, clicks], fused=False), numpy_tower, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_cold_item_is_scored_by_its_content_alone(rec: Recommender) -> None:
    catalog = rec.bundle.catalog
    n_id = rec.meta["n_id_items"]
    cold = [rec.item_row[i] for i in ("2", "9", "13")]
    assert (catalog["id_row"].to_numpy()[cold] == n_id).all()
    scores = rec.score([Query("3", PROFILE, _history(list(USER_3_HISTORY)))])
    assert np.isfinite(scores[0, cold]).all()
    content_map = rec.bundle.content_map
    assert content_map.genres and content_map.year_edges  # the tiny catalog's genres and years are its fields
    vecs, bias = content_map(rec.bundle.item_content[cold, : rec.meta["text_dim"]], catalog.iloc[cold])  # content alone
    np.testing.assert_allclose(rec.item_vecs[cold].numpy(), vecs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rec.item_bias[cold].numpy(), bias, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_without_a_content_map_the_towers_score_a_cold_item(bundle_dir: Path) -> None:
    rec = Recommender.load(bundle_dir)
    rec.set_content_map(None)  # as a bundle saved before the map was
    cold = [rec.item_row[i] for i in ("2", "9", "13")]
    with torch.no_grad():
        content = torch.as_tensor(rec.bundle.item_content[cold])
        torch.testing.assert_close(rec.item_vecs[cold], rec.model.item_content(content))
        torch.testing.assert_close(rec.item_bias[cold], rec.model.item_content_bias(content).squeeze(-1))


# ---------------------------------------------------------------- recommend
def _ids(response: dict) -> list[str]:
    return [entry["item_id"] for entry in response["items"]]


@pytest.mark.slow
def test_recommend_returns_k_items_best_first(rec: Recommender) -> None:
    asked, default, everything = rec.recommend(
        [
            {"request_id": "a", "profile": PROFILE, "k": 3},
            {"request_id": "b", "profile": PROFILE},
            {"request_id": "c", "profile": PROFILE, "k": 1000},
        ],
        k=4,
    )
    assert (asked["request_id"], default["request_id"], everything["request_id"]) == ("a", "b", "c")
    assert len(asked["items"]) == 3 and len(default["items"]) == 4 and len(everything["items"]) == N_ITEMS
    scores = [entry["score"] for entry in everything["items"]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(_ids(everything), key=int) == rec.item_ids
    assert _ids(asked) == _ids(everything)[:3] and _ids(default) == _ids(everything)[:4]
    row = rec.score([Query("", PROFILE, ())])[0]
    assert [entry["score"] for entry in everything["items"]] == pytest.approx(
        [row[rec.item_row[i]] for i in _ids(everything)], abs=1e-5
    )
    assert asked["model_version"] == ""


@pytest.mark.slow
def test_history_and_exclude_are_left_out(rec: Recommender) -> None:
    (response,) = rec.recommend(
        [
            {
                "request_id": "r",
                "profile": PROFILE,
                "history": [{"item_id": "1"}, {"item_id": "4"}],
                "exclude": ["8", "15"],
                "k": 100,
            }
        ]
    )
    assert set(_ids(response)) == set(rec.item_ids) - {"1", "4", "8", "15"}


@pytest.mark.slow
def test_candidates_restrict_the_ranking(rec: Recommender) -> None:
    (response,) = rec.recommend(
        [
            {
                "request_id": "r",
                "profile": PROFILE,
                "candidates": ["1", "3", "4", "8", "13"],
                "history": [{"item_id": "3"}],
                "exclude": ["8"],
                "k": 10,
            }
        ]
    )
    assert set(_ids(response)) == {"1", "4", "13"}  # 13: a cold item may be recommended
    scores = [entry["score"] for entry in response["items"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.slow
@pytest.mark.parametrize("field", ["candidates", "history"])
def test_unknown_item_ids_raise_naming_them(rec: Recommender, field: str) -> None:
    ids = ["1", "no-such-item", "999"]
    value = ids if field == "candidates" else [{"item_id": i} for i in ids]
    with pytest.raises(UnknownIdError) as err:
        rec.recommend([{"request_id": "r", field: value}])
    assert err.value.field == field and err.value.ids == ["no-such-item", "999"]
    assert field in str(err.value) and "no-such-item" in str(err.value) and "999" in str(err.value)


@pytest.mark.slow
def test_a_known_user_without_history_brings_the_training_history(rec: Recommender) -> None:
    query = rec.query_for({"request_id": "r", "user_id": "3"})
    assert query.history_items == USER_3_HISTORY
    assert query.profile == {"age": 29, "gender": "F", "occupation": "student", "zip_code": "10111"}
    stored, explicit = rec.recommend(
        [
            {"request_id": "s", "user_id": "3", "k": 100},
            {"request_id": "e", "profile": PROFILE, "history": [{"item_id": i} for i in USER_3_HISTORY], "k": 100},
        ]
    )
    assert not set(_ids(stored)) & set(USER_3_HISTORY)
    assert _ids(stored) == _ids(explicit)


@pytest.mark.slow
def test_an_explicit_history_or_profile_replaces_the_stored_one(rec: Recommender) -> None:
    query = rec.query_for(
        {"request_id": "r", "user_id": "3", "history": [{"item_id": "2", "rating": 5.0}], "profile": {"age": 60}}
    )
    assert query.history == (("2", 5.0, 0),)
    assert query.profile == {"age": 60, "gender": "", "occupation": "", "zip_code": ""}
    assert rec.query_for({"request_id": "r", "user_id": "3", "history": []}).history == ()


@pytest.mark.slow
def test_cold_and_unknown_users_get_no_history(rec: Recommender) -> None:
    cold = rec.query_for({"request_id": "r", "user_id": "1"})  # cold user: profile known, no training
    assert cold.history == () and cold.profile["occupation"] == "engineer"
    unknown = rec.query_for({"request_id": "r", "user_id": "no-such-user"})
    assert unknown.history == () and unknown.profile == {"age": None, "gender": "", "occupation": "", "zip_code": ""}
    (response,) = rec.recommend([{"request_id": "r", "user_id": "no-such-user"}], k=5)
    assert len(response["items"]) == 5 and all(np.isfinite(e["score"]) for e in response["items"])


@pytest.mark.slow
def test_a_batch_gives_the_same_answers_as_single_requests(rec: Recommender) -> None:
    requests = [
        {"request_id": "a", "user_id": "3", "k": 5},
        {"request_id": "b", "profile": PROFILE, "text": TASTE, "k": 5},
    ]
    batched = rec.recommend(requests)
    for request, response in zip(requests, batched):
        (single,) = rec.recommend([request])
        assert _ids(single) == _ids(response)
        assert [e["score"] for e in single["items"]] == pytest.approx([e["score"] for e in response["items"]], abs=1e-5)


@pytest.mark.slow
def test_an_unseen_sentence_is_encoded_once_and_cached(bundle_dir: Path) -> None:
    rec = Recommender.load(bundle_dir)  # a fresh one: its text cache holds only the bundle's sentences
    sentences = rec.sentences
    assert sentences.encoder is None
    before = len(sentences.row)
    known = {"request_id": "r", "user_id": "3", "text": TASTE}  # the profile and the taste are in the bundle
    rec.recommend([known])
    assert len(sentences.row) == before and sentences.encoder is None

    encoder = sentences.text_encoder()
    calls: list[list[str]] = []
    encode = encoder.encode

    def counting_encode(texts, *args, **kwargs):
        calls.append(list(texts))
        return encode(texts, *args, **kwargs)

    encoder.encode = counting_encode
    sentence = "I like slow films about space travel."
    (first,) = rec.recommend([{**known, "text": sentence}])
    assert len(sentences.row) == before + 1 and calls == [[sentence]]
    assert sentences.matrix.shape[0] == before + 1
    np.testing.assert_allclose(sentences.matrix[sentences.row[sentence]], encode([sentence])[0], atol=1e-5)
    (second,) = rec.recommend([{**known, "text": sentence}])
    assert len(sentences.row) == before + 1 and calls == [[sentence]]  # not encoded again
    assert first == second


# ---------------------------------------------------------------- reasons
@pytest.fixture
def ungated(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny model's vectors are two epochs of noise, so whether two items are "similar" is
    chance: the kinds of reason that need the model's agreement are let through here (their gates
    are tested in test_reasons.py), and the tests check the path from the data to the answer."""
    from recsys_tasks.explain import reasons

    monkeypatch.setattr(reasons, "SIMILAR_MIN", -1.0)
    monkeypatch.setattr(reasons, "RELATED_MIN", -1.0)


@pytest.mark.slow
def test_every_recommended_item_has_a_reason(rec: Recommender) -> None:
    requests = [
        {"request_id": "known", "user_id": "3", "k": 5},
        {"request_id": "cold", "profile": PROFILE, "text": TASTE},
        {"request_id": "empty", "k": N_ITEMS},
    ]
    for response in rec.recommend(requests):
        assert response["items"] and all(
            set(e) == {"item_id", "score", "reason", "title", "year", "genres"} for e in response["items"]
        )
        assert all(isinstance(e["reason"], str) and e["reason"] for e in response["items"])


@pytest.mark.slow
@pytest.mark.usefixtures("ungated")
def test_a_history_item_sharing_a_kg_entity_explains_the_item(rec: Recommender) -> None:
    """The tiny KG says films 3 and 4 have the same director (person1)."""
    to_4, to_3 = rec.recommend(
        [
            {"request_id": "a", "history": [{"item_id": "3", "rating": 5}], "candidates": ["4"]},
            {"request_id": "b", "history": [{"item_id": "4"}], "candidates": ["3"]},
        ]
    )
    assert to_4["items"][0]["reason"] == "shares its director with Movie 3"
    assert to_3["items"][0]["reason"] == "shares its director with Movie 4"  # no rating: still cited


@pytest.mark.slow
def test_a_stated_genre_explains_an_item_of_that_genre(rec: Recommender) -> None:
    (response,) = rec.recommend([{"request_id": "t", "text": "Mostly sci-fi, please.", "candidates": ["3", "6"]}])
    genres = dict(zip(rec.bundle.catalog["item_id"], rec.bundle.catalog["genres"]))
    assert "Sci-Fi" in genres["3"] and "Sci-Fi" not in genres["6"]
    reasons = {e["item_id"]: e["reason"] for e in response["items"]}
    assert reasons["3"] == "matches 'sci-fi'" and reasons["6"] != "matches 'sci-fi'"


@pytest.mark.slow
@pytest.mark.usefixtures("ungated")
def test_a_bundle_saved_before_reasons_still_loads_and_explains(bundle_dir: Path, tmp_path: Path) -> None:
    """No item_links.parquet, no positive_threshold: the same scores, reasons without KG links."""
    import json
    import shutil

    old = tmp_path / "old-bundle"
    shutil.copytree(bundle_dir, old)
    (old / "item_links.parquet").unlink()
    meta = json.loads((old / "bundle.json").read_text())
    del meta["positive_threshold"]
    (old / "bundle.json").write_text(json.dumps(meta))
    request = {"request_id": "a", "history": [{"item_id": "3", "rating": 5}], "candidates": ["4"]}
    (new_answer,) = Recommender.load(bundle_dir).recommend([request])
    old_rec = Recommender.load(old)
    assert old_rec.bundle.item_links is None
    (old_answer,) = old_rec.recommend([request])
    assert old_answer["items"][0]["score"] == new_answer["items"][0]["score"]
    assert new_answer["items"][0]["reason"] == "shares its director with Movie 3"
    assert old_answer["items"][0]["reason"] == "similar to Movie 3"  # the model's vectors, not the KG
    (everything,) = old_rec.recommend([{"request_id": "b", "user_id": "3", "k": N_ITEMS}])
    assert all(e["reason"] for e in everything["items"])


class _ExactIndex:
    """`index.ItemIndex`'s contract, exactly (no FAISS): top-n rows by u·v + b."""

    def __init__(self, rec: Recommender):
        self.rows = rec.indexed_rows()  # what ItemIndex is built over (serving's `_served`)
        self.vecs, self.bias = rec.index_arrays(self.rows)

    def search(self, users: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        scores = users @ self.vecs.T + self.bias
        order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
        found = np.full((len(users), n), -1, np.int64)  # -1: fewer than n items indexed, as FAISS
        found[:, : order.shape[1]] = self.rows[order]
        padded = np.full((len(users), n), -np.inf, np.float32)
        padded[:, : order.shape[1]] = np.take_along_axis(scores, order, 1)
        return padded, found


@pytest.mark.slow
@pytest.mark.usefixtures("ungated")
def test_an_index_ranked_answer_has_the_same_reasons(rec: Recommender) -> None:
    requests = [
        {"request_id": "known", "user_id": "3", "k": 5},
        {"request_id": "taste", "text": TASTE, "k": 6},
        {"request_id": "kg", "history": [{"item_id": "3", "rating": 5}], "candidates": ["4", "5"]},
    ]
    exact, indexed = rec.recommend(requests), rec.recommend_with_index(_ExactIndex(rec), requests)
    assert [[(e["item_id"], e["reason"]) for e in r["items"]] for r in indexed] == [
        [(e["item_id"], e["reason"]) for e in r["items"]] for r in exact
    ]
    assert {e["item_id"]: e["reason"] for e in indexed[2]["items"]}["4"] == "shares its director with Movie 3"


# ---------------------------------------------------------------- fusion
def _fused(bundle_dir: Path, prior: float = 0.7, ease: float = 0.3, taste: float = 0.0) -> Recommender:
    """The tiny bundle with fusion weights set by hand (its tuning saw one user): every bucket alike."""
    rec = Recommender.load(bundle_dir)
    meta = {
        **rec.bundle.fusion,
        "weights": {"prior": [prior] * 5, "ease": [ease] * 5, "edges": [0, 10, 20, 40], "taste": taste},
    }
    rec.set_fusion(meta, rec.bundle.ease)
    return rec


@pytest.mark.slow
def test_the_bundle_carries_a_tuned_fusion(rec: Recommender) -> None:
    fusion = rec.bundle.fusion
    assert rec.fusion is not None and rec.bundle.ease.shape == (rec.meta["n_id_items"],) * 2
    assert len(fusion["weights"]["prior"]) == len(fusion["weights"]["ease"]) == 5
    assert "taste" in fusion["weights"] and "taste" in fusion["validation"]  # tuned on the fusion users' stated taste
    assert set(fusion["excluded_users"]) >= {"4", "6", "10", "7"}  # validation and fusion users: out of the counts


@pytest.mark.slow
def test_the_fusion_adds_the_prior_and_ease_of_the_whole_history(bundle_dir: Path) -> None:
    rec = _fused(bundle_dir)
    long = _history(_catalog_cycle(20))
    query = Query("u", PROFILE, long)
    added = rec.score([query])[0] - rec.score([query], fused=False)[0]
    rows = np.array([rec.item_row[i] for i in query.history_items])
    prior, ease, lengths = rec.fusion.terms([query], [rows])  # all 20 items, not the last MAX_HISTORY
    assert lengths.tolist() == [sum(rec.bundle.catalog["id_row"][rows] < rec.meta["n_id_items"])]
    expected = np.zeros(len(rec.item_ids), np.float32)
    expected[rec.fusion.id_cols] = 0.7 * prior[0] + 0.3 * ease[0]
    np.testing.assert_allclose(added, expected, rtol=1e-4, atol=1e-5)
    cold = [rec.item_row[i] for i in ("2", "9", "13")]
    assert not added[cold].any()  # items without an ID: neither term


@pytest.mark.slow
@pytest.mark.usefixtures("ungated")
def test_an_index_ranked_answer_is_the_exact_one_with_a_fusion(bundle_dir: Path) -> None:
    rec = _fused(bundle_dir)
    assert set(rec.indexed_rows().tolist()) == {rec.item_row[i] for i in ("2", "9", "13")}  # the rest: exact
    requests = [
        {"request_id": "known", "user_id": "3", "k": 8},
        {"request_id": "new", "profile": PROFILE, "k": 15},
        {"request_id": "cand", "user_id": "3", "candidates": ["2", "4", "9", "11"]},
    ]
    _same(rec.recommend_with_index(_ExactIndex(rec), requests), rec.recommend(requests))


@pytest.mark.slow
@pytest.mark.usefixtures("ungated")
def test_a_stated_genre_raises_its_items_with_an_id_in_both_paths(bundle_dir: Path) -> None:
    rec = _fused(bundle_dir, prior=0.0, ease=0.0, taste=1.5)
    query = Query("u", PROFILE, (), "I like comedy, but not horror")
    added = rec.score([query])[0] - rec.score([query], fused=False)[0]
    genres = rec.bundle.catalog["genres"].fillna("").str.lower().str.split("|")
    has_id = rec.bundle.catalog["id_row"].to_numpy() < rec.meta["n_id_items"]
    expected = np.where([("comedy" in g) for g in genres] & has_id, 1.5, 0.0)  # horror is negated
    assert expected.any() and not expected.all()
    np.testing.assert_allclose(added, expected, atol=1e-5)
    requests = [{"request_id": "t", "profile": PROFILE, "text": "I like comedy, but not horror", "k": 10}]
    _same(rec.recommend_with_index(_ExactIndex(rec), requests), rec.recommend(requests))


# ---------------------------------------------------------------- the content map's profile term
def _with_profile(bundle_dir: Path, weight: float) -> Recommender:
    rec = Recommender.load(bundle_dir)
    content_map = rec.bundle.content_map  # finetune stores the basis and centre it chose, whatever the weight
    rec.set_content_map(content_map.with_profile(weight, content_map.profile_basis, content_map.profile_center))
    return rec


@pytest.mark.slow
@pytest.mark.usefixtures("ungated")
def test_a_new_item_scores_its_text_closeness_to_what_the_user_liked_in_both_paths(bundle_dir: Path) -> None:
    rec, plain = _with_profile(bundle_dir, 2.0), _with_profile(bundle_dir, 0.0)
    liked, disliked = ("1", "3", "5"), ("6",)
    history = tuple((i, 5.0, 880_000_000 + n) for n, i in enumerate(liked)) + (("6", 2.0, 880_000_010),)
    query = Query("u", PROFILE, history)
    added = rec.score([query])[0] - plain.score([query])[0]
    text_dim, content_map = rec.meta["text_dim"], rec.bundle.content_map
    basis, center = content_map.profile_basis, content_map.profile_center
    assert basis.shape[1] == text_dim and np.allclose(basis @ basis.T, np.eye(len(basis)), atol=1e-5)
    text = rec.bundle.item_content[:, :text_dim]
    mean = text[[rec.item_row[i] for i in liked]].mean(0)  # the item rated 2 is not liked: left out
    new = rec.bundle.catalog["id_row"].to_numpy() >= rec.meta["n_id_items"]
    expected = np.where(new, 2.0 * ((text - center) @ basis.T) @ (basis @ (mean / np.linalg.norm(mean))), 0.0)
    assert new.sum() == 3 and np.abs(expected[new]).min() > 0
    np.testing.assert_allclose(added, expected, atol=1e-4)
    nothing_liked = Query("u", PROFILE, tuple((i, 2.0, 0) for i in disliked))
    np.testing.assert_allclose(rec.score([nothing_liked]), plain.score([nothing_liked]), atol=1e-6)
    clicks = Query("u", PROFILE, tuple((i, 0.0, 0) for i in liked))  # no ratings: liked, as the reasons take them
    np.testing.assert_allclose(rec.score([clicks])[0] - plain.score([clicks])[0], expected, atol=1e-4)
    requests = [
        {"request_id": "h", "history": [{"item_id": i, "rating": r} for i, r, _ in history], "k": 15},
        {"request_id": "c", "history": [{"item_id": "1", "rating": 5}], "candidates": ["2", "4", "9", "13"]},
        {"request_id": "known", "user_id": "3", "k": 10},
    ]
    _same(rec.recommend_with_index(_ExactIndex(rec), requests), rec.recommend(requests))
    assert rec.recommend(requests)[0] != plain.recommend(requests)[0]


@pytest.mark.slow
def test_an_added_item_gets_the_profile_term_around_the_trained_items_mean(bundle_dir: Path) -> None:
    rec, plain = _with_profile(bundle_dir, 2.0), _with_profile(bundle_dir, 0.0)
    query = Query("u", PROFILE, (("1", 5.0, 0),))
    text = rec.bundle.item_content[:, : rec.meta["text_dim"]].copy()
    liked, basis, center = (
        text[rec.item_row["1"]],
        rec.bundle.content_map.profile_basis,
        rec.bundle.content_map.profile_center,
    )
    before = rec.score([query])[0] - plain.score([query])[0]
    for r in (rec, plain):  # a new item with the liked item's own text
        r.upsert_items([{"item_id": "twin", "title": "Movie 1 again", "genres": "Drama"}], liked[None, :])
    after = rec.score([query])[0] - plain.score([query])[0]
    np.testing.assert_allclose(after[: len(before)], before, atol=1e-5)  # the centre and basis are the map's
    expected = 2.0 * (basis @ (liked / np.linalg.norm(liked))) @ (basis @ (liked - center))
    assert after[rec.item_row["twin"]] == pytest.approx(expected, abs=1e-4) and expected > 0


@pytest.mark.slow
def test_a_bundle_saved_before_the_fusion_and_the_map_loads_and_serves_as_the_model(
    bundle_dir: Path, tmp_path: Path
) -> None:
    import shutil

    old = tmp_path / "old-bundle"
    shutil.copytree(bundle_dir, old)
    for name in ("fusion.json", "ease.npy", "content_map.npz"):
        (old / name).unlink()
    old_rec, new_rec = Recommender.load(old), Recommender.load(bundle_dir)
    assert old_rec.fusion is None and old_rec.bundle.content_map is None
    query = [Query("3", PROFILE, _history(list(USER_3_HISTORY)))]
    with_id = [r for r in range(N_ITEMS) if _has_id(new_rec, r)]
    np.testing.assert_allclose(
        old_rec.score(query)[0, with_id], new_rec.score(query, fused=False)[0, with_id], rtol=1e-5
    )
    (answer,) = old_rec.recommend([{"request_id": "a", "user_id": "3"}])
    assert len(answer["items"]) == N_ITEMS - len(USER_3_HISTORY)


def _has_id(rec: Recommender, row: int) -> bool:
    return bool(rec.bundle.catalog["id_row"].iloc[row] < rec.meta["n_id_items"])


# ---------------------------------------------------------------- fast paths = the plain way
def _plain(rec: Recommender, request: dict, k: int = 20) -> dict:
    """One request the plain way: its query scored alone, history and ``exclude`` left out item by
    item, a stable sort, reasons from freshly centred vectors, scores rounded by Python."""
    query = rec.query_for(request)
    scores = rec.score([query])[0]
    allowed = (
        np.ones(len(rec.item_ids), bool)
        if request.get("candidates") is None
        else np.isin(rec.item_ids, request["candidates"])
    )
    for item in (*query.history_items, *(request.get("exclude") or ())):
        if item in rec.item_row:
            allowed[rec.item_row[item]] = False
    rows = np.flatnonzero(allowed)
    top = rows[np.argsort(-scores[rows], kind="stable")[: request.get("k") or k]]
    taste = rec.text_vectors([query.text])[0] if query.text else None
    vecs = rec.item_vecs.detach().numpy().copy()  # another array: the explainer centres it anew
    reasons = rec.explainer.explain(query, *rec.requests.history_rows(query), top, vecs, rec.bundle.item_content, taste)
    return {
        "request_id": request["request_id"],
        "items": [
            {"item_id": rec.item_ids[i], "score": round(float(scores[i]), 6), "reason": r} for i, r in zip(top, reasons)
        ],
        "model_version": "",
    }


PLAIN_REQUESTS = [
    {"request_id": "known", "user_id": "3"},
    {"request_id": "known-again", "user_id": "3", "k": 3},
    {
        "request_id": "cold",
        "profile": PROFILE,
        "history": [{"item_id": "4", "rating": 5}, {"item_id": "7", "rating": 2}],
    },
    {"request_id": "taste", "profile": PROFILE, "text": TASTE, "exclude": ["1", "2", "no-such-item"], "k": 6},
    {"request_id": "cand", "user_id": "3", "candidates": ["1", "4", "9", "13"], "exclude": ["9"]},
    {"request_id": "unknown-user", "user_id": "nobody", "k": 1},
]


def _same(got: list[dict], expected: list[dict]) -> None:
    assert [[(e["item_id"], e["reason"]) for e in r["items"]] for r in got] == [
        [(e["item_id"], e["reason"]) for e in r["items"]] for r in expected
    ]
    for g, e in zip(got, expected):
        assert [x["score"] for x in g["items"]] == pytest.approx([x["score"] for x in e["items"]], abs=1e-5)


@pytest.mark.slow
@pytest.mark.usefixtures("ungated")
def test_a_batch_answers_as_each_request_the_plain_way(bundle_dir: Path) -> None:
    """Remembered history rows, shared KG means, kept unit vectors and vectorised rounding change no answer."""
    rec = Recommender.load(bundle_dir)
    for _ in range(2):  # the second time from what the first remembered
        _same(rec.recommend(PLAIN_REQUESTS), [_plain(rec, r) for r in PLAIN_REQUESTS])


@pytest.mark.slow
@pytest.mark.usefixtures("ungated")
def test_a_known_users_history_is_looked_up_again_once_items_are_added(bundle_dir: Path) -> None:
    """A stored history may name an item the catalog lacks; once it is added, the user has seen it."""
    rec = Recommender.load(bundle_dir)
    known = dict(rec.requests.histories)
    known["3"] = (*known["3"], ("n9", 5.0, 890_000_000))  # not in the catalog yet
    rec.requests.histories = known
    request = {"request_id": "a", "user_id": "3", "k": N_ITEMS + 1}
    _same(rec.recommend([request]), [_plain(rec, request)])
    text_dim = int(rec.meta["text_dim"])
    rec.upsert_items([{"item_id": "n9", "title": "Nine", "genres": "Drama"}], np.eye(1, text_dim, dtype=np.float32))
    (answer,) = rec.recommend([request])
    assert "n9" not in _ids(answer)  # without the lookup again: recommended, though in the history
    _same([answer], [_plain(rec, request)])


@pytest.mark.slow
def test_an_added_item_is_mapped_from_its_own_year_and_genres(bundle_dir: Path) -> None:
    from recsys_tasks.model.finetune import _content_map

    rec = Recommender.load(bundle_dir)
    # the map refit at the grid's smallest penalty: the tiny bundle's own cross-validated one may be the
    # largest (1000, as some training draws give), where the fields move a bias by ~1e-6
    rec.set_content_map(_content_map(rec, FinetuneConfig(map_alphas=FinetuneConfig().map_alphas[:1])))
    text = np.eye(2, int(rec.meta["text_dim"]), dtype=np.float32)
    items = [
        {"item_id": "old", "title": "Same", "genres": "Drama", "year": 1930},
        {"item_id": "new", "title": "Same", "genres": "Comedy|Action", "year": 1998},
    ]
    rec.upsert_items(items, text[[0, 0]])  # the same text, other fields
    rows = [rec.item_row["old"], rec.item_row["new"]]
    vecs, bias = rec.bundle.content_map(text[[0, 0]], rec.bundle.catalog.iloc[rows])
    np.testing.assert_allclose(rec.item_vecs[rows].numpy(), vecs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rec.item_bias[rows].numpy(), bias, rtol=1e-5, atol=1e-6)
    assert not np.allclose(bias[0], bias[1])  # the fields count
    rec.upsert_items([{**items[0], "year": 1998, "genres": "Comedy|Action"}], text[[0]])  # updated: mapped again
    np.testing.assert_allclose(rec.item_bias[rows[0]].numpy(), bias[1], rtol=1e-5, atol=1e-6)


def test_scores_are_rounded_as_python_rounds_them() -> None:
    from recsys_tasks.model.explanations import round6

    scores = np.random.default_rng(0).normal(0, 4, 200_000).astype(np.float32)
    scores[:6] = [0.0, -0.0, 2.5e-7, -5e-7, 1234.5678, 1e-9]
    rounded = round6(scores)
    assert rounded == [round(float(s), 6) for s in scores]
    assert [repr(x) for x in rounded[:100]] == [repr(round(float(s), 6)) for s in scores[:100]]


@pytest.mark.slow
def test_kg_demo_vectors_are_the_mean_of_the_known_values_shared_read_only(rec: Recommender) -> None:
    from recsys_tasks.kg.nodes import demographic_nodes

    vector = rec.kg_demo_vector(PROFILE)
    expected = np.mean([rec.bundle.kg_demo[n] for n in demographic_nodes(PROFILE) if n in rec.bundle.kg_demo], axis=0)
    np.testing.assert_array_equal(vector, expected.astype(np.float32))
    assert rec.kg_demo_vector({**PROFILE, "zip_code": "99999"}) is vector and not vector.flags.writeable
    np.testing.assert_array_equal(rec.kg_demo_vector({}), np.zeros(rec.meta["kg_dim"], np.float32))


# ---------------------------------------------------------------- what a bundle saves for a fast load
def _legacy_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    """The bundle without the files saved for serving: loaded as bundles before them were."""
    import shutil

    legacy = Path(shutil.copytree(bundle_dir, tmp_path / "legacy"))
    shutil.rmtree(legacy / "history_index")
    (legacy / "popular.json").unlink()
    (legacy / "prior.npz").unlink()
    return legacy


@pytest.mark.slow
def test_a_loaded_bundle_reads_histories_only_on_demand(bundle_dir: Path) -> None:
    from recsys_tasks.model.bundle import Bundle

    bundle = Bundle.load(bundle_dir)
    assert bundle._histories is None and bundle.history_index is not None
    assert isinstance(bundle.item_content, np.memmap) and not bundle.item_content.flags.owndata
    assert [h[0] for h in bundle.history_index["3"]] == list(USER_3_HISTORY)  # oldest first
    assert len(bundle.histories) == 30  # read when asked


@pytest.mark.slow
def test_the_saved_history_index_is_the_adapters_grouping(bundle_dir: Path, tmp_path: Path) -> None:
    fast, slow = Recommender.load(bundle_dir), Recommender.load(_legacy_copy(bundle_dir, tmp_path))
    assert isinstance(slow.requests.histories, dict) and not isinstance(fast.requests.histories, dict)
    assert set(fast.requests.histories) == set(slow.requests.histories)
    for user, history in slow.requests.histories.items():
        assert fast.requests.histories[user] == history
        assert fast.requests.histories.get(user) is fast.requests.histories.get(user)  # identity: own history


@pytest.mark.slow
def test_a_bundle_saves_its_own_index_only_where_it_was_built_from_its_histories(
    bundle_dir: Path, tmp_path: Path
) -> None:
    from recsys_tasks.model.bundle import Bundle, HistoryIndex

    bundle = Bundle.load(bundle_dir)
    item_ids = bundle.catalog["item_id"].astype(str).tolist()
    histories = bundle.histories.copy()
    bundle.histories = histories
    bundle.history_index = HistoryIndex.build(histories, item_ids)
    bundle.history_index.arrays["ratings"] = bundle.history_index.arrays["ratings"] + 100.0  # marks it as this one
    (tmp_path / "same").mkdir()
    bundle.save(tmp_path / "same")
    assert np.load(tmp_path / "same" / "history_index" / "ratings.npy").min() >= 100.0  # reused, not rebuilt

    bundle.histories = histories.assign(rating=1.0)  # histories changed after the index was built: rebuilt
    (tmp_path / "changed").mkdir()
    bundle.save(tmp_path / "changed")
    assert set(np.load(tmp_path / "changed" / "history_index" / "ratings.npy").tolist()) == {1.0}

    bundle.histories = histories
    bundle.history_index = Bundle.load(bundle_dir).history_index  # loaded, not built here: rebuilt
    (tmp_path / "loaded").mkdir()
    bundle.save(tmp_path / "loaded")
    np.testing.assert_array_equal(
        np.load(tmp_path / "loaded" / "history_index" / "ratings.npy"),
        np.load(bundle_dir / "history_index" / "ratings.npy"),
    )


@pytest.mark.slow
def test_the_saved_prior_and_reasons_answer_as_recounted_ones(bundle_dir: Path, tmp_path: Path) -> None:
    """Loaded with the saved prior and popular segments, the recommender answers exactly as one that
    recounts them from the histories."""
    fast, slow = Recommender.load(bundle_dir), Recommender.load(_legacy_copy(bundle_dir, tmp_path))
    assert fast.bundle.prior is not None and slow.bundle.prior is None
    assert fast.explainer.__dict__.keys() == slow.explainer.__dict__.keys()
    for profile in (PROFILE, {"gender": "M"}, {"age": 70, "occupation": "nobody"}, {}):
        np.testing.assert_array_equal(fast.fusion.prior.counts_for(profile), slow.fusion.prior.counts_for(profile))
    requests = [{"request_id": str(u), "user_id": str(u), "k": N_ITEMS} for u in range(1, 13)] + [
        {"request_id": "new", "profile": PROFILE, "text": TASTE, "k": 5}
    ]
    assert fast.recommend(requests) == slow.recommend(requests)

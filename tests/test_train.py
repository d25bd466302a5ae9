"""finetune on the session's tiny stages: KG (PyKEEN, dim 4) and text (a tiny random BERT), 2 epochs.

With seed 42 and ``validation_user_frac=0.3`` the pseudo-cold validation users are 4, 6 and 10, and
(``fusion_user_frac=0.1``) the fusion's user is 7; they hold 4 of the training part's 12 positives,
so 8 (user, liked item) pairs are fitted.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_tasks.artifacts import StageResult, read_json
from recsys_tasks.config import FinetuneConfig
from recsys_tasks.data.split import Split
from recsys_tasks.model.content_map import ContentMap
from recsys_tasks.model.finetune import finetune

TEXT_DIM, KG_DIM = 32, 4  # the tiny BERT's hidden size, tiny_kg_config's dimension
BUNDLE_FILES = {
    "model.pt",
    "catalog.parquet",
    "item_content.npy",
    "users.parquet",
    "histories.parquet",
    "texts.parquet",
    "text_vectors.npy",
    "kg_demo.npy",
    "bundle.json",
    "item_links.parquet",
    "content_map.npz",
    "fusion.json",
    "ease.npy",
    "history_index",  # what serving reads instead of histories.parquet, so a large bundle loads in seconds
    "popular.json",
    "prior.npz",
}


@dataclass(frozen=True)
class Stages:
    """The session's tiny stage folders, the tiny BERT they were encoded with and the tiny finetune config."""

    snapshot: Path
    kg: Path
    text: Path
    model: str
    cfg: FinetuneConfig


@pytest.fixture(scope="module")
def stages(
    tiny_snapshot: StageResult,
    tiny_kg: StageResult,
    tiny_text: StageResult,
    tiny_bert: str,
    tiny_finetune_config: FinetuneConfig,
) -> Stages:
    return Stages(
        Path(tiny_snapshot.out_dir), Path(tiny_kg.out_dir), Path(tiny_text.out_dir), tiny_bert, tiny_finetune_config
    )


def _finetune(
    stages: Stages, out: Path, cfg: FinetuneConfig | None = None, snapshot: Path | None = None
) -> StageResult:
    return finetune(cfg or stages.cfg, snapshot or stages.snapshot, stages.kg, stages.text, out, stages.model)


@pytest.fixture(scope="module")
def trained(tiny_bundle: StageResult) -> StageResult:
    """``finetune`` of the tiny stages with ``tiny_finetune_config`` (shared by the session: read only)."""
    return tiny_bundle


def _state(result: StageResult) -> dict[str, torch.Tensor]:
    return torch.load(result.path("bundle") / "model.pt", weights_only=True)["state_dict"]


# ---------------------------------------------------------------- outputs
@pytest.mark.slow
def test_finetune_writes_a_bundle_curves_and_result(trained: StageResult) -> None:
    out = Path(trained.out_dir)
    assert sorted(p.name for p in out.iterdir()) == ["bundle", "curves.csv", "curves.png", "result.json"]
    assert trained.path("curves_chart").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name for p in trained.path("bundle").iterdir()} == BUNDLE_FILES
    assert trained.path("curves") == out / "curves.csv"
    assert StageResult.load(out) == trained
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".finetune")]  # no temp dirs left


@pytest.mark.slow
def test_metrics_are_finite_and_match_the_curves(trained: StageResult, tiny_finetune_config: FinetuneConfig) -> None:
    m = trained.metrics
    assert all(math.isfinite(v) for v in m.values()), m
    curves = pd.read_csv(trained.path("curves"))
    assert m["epochs_trained"] == 2 and 1 <= m["id_epochs_trained"] <= tiny_finetune_config.id_epochs
    assert list(curves["epoch"]) == list(range(1, len(curves) + 1))
    assert len(curves) == m["epochs_trained"] + m["id_epochs_trained"]
    assert {"loss", "val_ndcg", "val_ndcg_at_0", "val_ndcg_warm"} <= set(curves.columns)
    kept = [curves["val_ndcg"].iloc[:2].max(), *curves["val_ndcg"].iloc[2:]]  # stage 1's best, or a stage-2 epoch
    assert 0.0 <= m["val_ndcg"] <= 1.0 and any(v == pytest.approx(m["val_ndcg"]) for v in kept)
    assert m["final_loss"] == pytest.approx(curves["loss"].iloc[-1]) and (curves["loss"] > 0).all()
    assert m["n_validation_users"] == 3 and m["n_fusion_users"] == 1 and m["n_train_pairs"] == 8
    # chosen on pseudo-new items, and what the bundle serves
    assert m["content_profile_weight"] in tiny_finetune_config.profile_weights
    assert ContentMap.load(trained.path("bundle")).profile_weight == m["content_profile_weight"]
    assert m["pseudo_new_ndcg"] >= m["pseudo_new_ndcg_map"]


@pytest.mark.slow
def test_the_profile_weight_is_zero_where_no_fold_leaves_enough_items_to_map(
    trained: StageResult, stages: Stages
) -> None:
    import dataclasses

    import recsys_tasks.model.finetune as train_module
    from recsys_tasks.data.dataset import Dataset
    from recsys_tasks.model.recommender import Recommender

    rec, split = Recommender.load(trained.path("bundle")), Split.load(stages.snapshot)
    dataset = Dataset.load(stages.snapshot)
    cfg = dataclasses.replace(stages.cfg, seed=0)
    weight, basis, center, report = train_module._profile_weight(rec, dataset, split.train, 4.0, cfg)
    assert weight in cfg.profile_weights and set(report) == {
        "content_profile_weight",
        "content_profile_dims",
        "pseudo_new_ndcg_map",
        "pseudo_new_ndcg",
    }
    assert basis.shape == (report["content_profile_dims"], rec.meta["text_dim"]) and center.shape == (
        rec.meta["text_dim"],
    )
    one_fold = dataclasses.replace(cfg, pseudo_new_folds=1)  # one fold: every trained item, none left to fit on
    weight, _, _, report = train_module._profile_weight(rec, dataset, split.train, 4.0, one_fold)
    assert (weight, report) == (0.0, {})


@pytest.mark.slow
def test_only_training_items_get_an_id_row(trained: StageResult, stages: Stages) -> None:
    """Guards cold-item leakage: an item without training interactions must be served by content alone."""
    bundle = trained.path("bundle")
    catalog = pd.read_parquet(bundle / "catalog.parquet")
    trained_items = set(Split.load(stages.snapshot).train["item_id"])
    meta = read_json(bundle / "bundle.json")
    n_id = meta["n_id_items"]
    assert n_id == len(trained_items)
    has_id = catalog["id_row"] < n_id
    assert set(catalog.loc[has_id, "item_id"]) == trained_items
    assert sorted(catalog.loc[has_id, "id_row"]) == list(range(n_id))
    assert (catalog.loc[~has_id, "id_row"] == n_id).all()
    assert {"2", "9", "13"} <= set(catalog.loc[~has_id, "item_id"])  # the cold items


@pytest.mark.slow
def test_bundle_holds_training_histories_and_aligned_features(trained: StageResult, stages: Stages) -> None:
    bundle = trained.path("bundle")
    train = Split.load(stages.snapshot).train
    histories = pd.read_parquet(bundle / "histories.parquet")
    assert set(zip(histories["user_id"], histories["item_id"])) == set(zip(train["user_id"], train["item_id"]))
    assert not {"1", "5"} & set(histories["user_id"])  # cold users have no history in the bundle
    content = np.load(bundle / "item_content.npy")
    assert content.shape == (15, TEXT_DIM + KG_DIM) and content.dtype == np.float32
    np.testing.assert_allclose(content[:, :TEXT_DIM], np.load(stages.text / "items.npy"))
    np.testing.assert_allclose(np.linalg.norm(content[:, TEXT_DIM:], axis=1), 1.0, atol=1e-5)  # unit KG rows
    meta = read_json(bundle / "bundle.json")
    assert (meta["text_model"], meta["kg_dim"], meta["text_dim"], meta["max_history"]) == (
        stages.model,
        KG_DIM,
        TEXT_DIM,
        5,
    )
    assert meta["finetune"]["dim"] == 4 and meta["finetune"]["seed"] == 42 and meta["finetune"]["device"] == "cpu"
    assert {"gender:F", "gender:M", "occupation:student"} <= set(meta["kg_demo_labels"])
    texts = pd.read_parquet(bundle / "texts.parquet")["text"].tolist()
    assert "I like Action and Drama movies." in texts and len(texts) == len(np.load(bundle / "text_vectors.npy"))


# ---------------------------------------------------------------- determinism
@pytest.mark.slow
def test_same_seed_gives_the_same_model(trained: StageResult, stages: Stages, tmp_path: Path) -> None:
    again = _finetune(stages, tmp_path / "again")
    assert again.metrics["val_ndcg"] == trained.metrics["val_ndcg"]
    assert again.metrics["final_loss"] == trained.metrics["final_loss"]
    pd.testing.assert_frame_equal(pd.read_csv(again.path("curves")), pd.read_csv(trained.path("curves")))
    a, b = _state(trained), _state(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_another_seed_gives_another_model(trained: StageResult, stages: Stages, tmp_path: Path) -> None:
    other = _finetune(stages, tmp_path / "other", FinetuneConfig(**{**stages.cfg.__dict__, "seed": 7}))
    a, b = _state(trained), _state(other)
    assert not all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_item_ids_learn_at_their_own_rate(stages: Stages, tmp_path: Path) -> None:
    """``id_learning_rate`` moves the item ID embeddings and biases only: with the towers' rate at 0
    they keep their initial weights, the IDs leave theirs (0 = the towers' rate: nothing moves)."""
    frozen = {"learning_rate": 0.0, "epochs": 1, "id_epochs": 0}
    ids_only = _state(
        _finetune(
            stages, tmp_path / "ids", FinetuneConfig(**{**stages.cfg.__dict__, **frozen, "id_learning_rate": 0.05})
        )
    )
    nothing = _state(
        _finetune(
            stages, tmp_path / "none", FinetuneConfig(**{**stages.cfg.__dict__, **frozen, "id_learning_rate": 0.0})
        )
    )
    id_keys = {"item_id.weight", "item_id_bias.weight"}
    assert id_keys < set(ids_only)
    assert all(torch.equal(ids_only[k], nothing[k]) for k in ids_only if k not in id_keys)
    assert all(not torch.equal(ids_only[k], nothing[k]) for k in id_keys)


@pytest.mark.slow
def test_the_item_ids_go_on_alone_after_the_towers_stop(stages: Stages, tmp_path: Path) -> None:
    """``id_epochs``: after the first stage the towers are frozen (the same weights as a run without the
    second stage), only the item IDs train on; the warm validation is tracked in the curves."""
    alone = _finetune(stages, tmp_path / "ids", FinetuneConfig(**{**stages.cfg.__dict__, "id_epochs": 2}))
    without = _finetune(stages, tmp_path / "none", FinetuneConfig(**{**stages.cfg.__dict__, "id_epochs": 0}))
    a, b = _state(alone), _state(without)
    assert all(torch.equal(a[k], b[k]) for k in a if k not in {"item_id.weight", "item_id_bias.weight"})
    assert alone.metrics["epochs_trained"] == without.metrics["epochs_trained"]
    assert without.metrics["id_epochs_trained"] == 0 and 1 <= alone.metrics["id_epochs_trained"] <= 2
    curves = pd.read_csv(alone.path("curves"))
    assert len(curves) == alone.metrics["epochs_trained"] + alone.metrics["id_epochs_trained"]
    assert {"val_ndcg_at_0", "val_ndcg_warm", "val_ndcg"} <= set(curves.columns)  # (no tiny user has 10+ items)
    assert curves.drop(columns="epoch").notna().all().all()


@pytest.mark.slow
def test_without_validation_users_the_second_stage_is_skipped_quietly(stages: Stages, tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no mean of an empty validation
        result = _finetune(
            stages,
            tmp_path / "noval",
            FinetuneConfig(**{**stages.cfg.__dict__, "validation_user_frac": 0.0, "id_epochs": 3}),
        )
    assert result.metrics["id_epochs_trained"] == 0 and result.metrics["n_validation_users"] == 0


# ---------------------------------------------------------------- bad input
def _without_training_part(snapshot: Path, into: Path) -> Path:
    shutil.copytree(snapshot, into)
    split = pd.read_parquet(into / "split.parquet")
    split["part"] = split["part"].replace("train", "warm_test")
    split.to_parquet(into / "split.parquet", index=False)
    return into


@pytest.mark.slow
def test_an_empty_training_part_raises_and_writes_nothing(stages: Stages, tmp_path: Path) -> None:
    snapshot = _without_training_part(stages.snapshot, tmp_path / "snapshot")
    out = tmp_path / "runs" / "finetune"
    with pytest.raises(ValueError, match="training part is empty"):
        _finetune(stages, out, snapshot=snapshot)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot"]  # no runs/ folder, no temp dir


@pytest.mark.slow
def test_a_failed_rerun_leaves_the_previous_output_intact(trained: StageResult, stages: Stages, tmp_path: Path) -> None:
    out = tmp_path / "finetune"
    shutil.copytree(trained.out_dir, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    snapshot = _without_training_part(stages.snapshot, tmp_path / "snapshot")
    with pytest.raises(ValueError, match="training part is empty"):
        _finetune(stages, out, snapshot=snapshot)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finetune", "snapshot"]


def test_training_histories_are_earlier_items_of_the_same_user(trained: StageResult, stages: Stages) -> None:
    """Cold-start simulation: a history is the user's first n items or the n just before the
    target (n <= max_history, sometimes 0), never the target or anything after it."""
    from recsys_tasks.data.dataset import Dataset
    from recsys_tasks.model.batches import Batches as _Batches
    from recsys_tasks.model.recommender import Recommender

    dataset, split = Dataset.load(stages.snapshot), Split.load(stages.snapshot)
    rec = Recommender.load(trained.path("bundle"))
    cfg = FinetuneConfig(max_history=3, batch_size=4, empty_history_prob=0.3)
    batches = _Batches(rec, split.train, dataset, cfg, 4.0, np.random.default_rng(0))
    ordered = split.train.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    sequences = [[rec.item_row[i] for i in g["item_id"]] for _, g in ordered.groupby("user_id", sort=True)]
    ratings = [g["rating"].tolist() for _, g in ordered.groupby("user_id", sort=True)]
    lengths, flags = [], []
    for _ in range(5):
        for batch in batches.epoch():
            hist, mask = batch.inputs[5], batch.inputs[6]
            for b, (user, position, target) in enumerate(zip(batch.users, batch.positions, batch.targets)):
                sequence, n = sequences[user], int(mask[b].sum())
                assert sequence[position] == target
                assert n <= min(3, position) and (mask[b, :n] == 1).all() and (mask[b, n:] == 0).all()
                history = list(hist[b, :n])
                assert history in (sequence[:n], sequence[position - n : position])
                start = 0 if history == sequence[:n] else position - n
                # each history item flagged liked as its rating says (>= 4 here), padding not
                expected = [1.0 if r >= 4.0 else 0.0 for r in ratings[user][start : start + n]]
                assert list(batch.liked[b, :n]) == expected and not batch.liked[b, n:].any()
                lengths.append(n)
                flags.extend(expected)
    assert max(lengths) == 3 and 0 in lengths
    assert 0.0 in flags and 1.0 in flags  # both kinds were drawn


def test_profile_dropout_hides_the_profile_only_from_users_with_a_history(trained: StageResult, stages: Stages) -> None:
    """``profile_dropout``: some training users with a history get no demographics, KG-demographic or
    profile-text input (the history must carry them); a profile-only user always keeps its profile."""
    from recsys_tasks.data.dataset import Dataset
    from recsys_tasks.model.batches import Batches as _Batches
    from recsys_tasks.model.recommender import Recommender

    dataset, split = Dataset.load(stages.snapshot), Split.load(stages.snapshot)
    rec = Recommender.load(trained.path("bundle"))
    cfg = FinetuneConfig(max_history=3, batch_size=4, empty_history_prob=0.3, profile_dropout=0.5)
    batches = _Batches(rec, split.train, dataset, cfg, 4.0, np.random.default_rng(0))
    hidden, kept_with_history = 0, 0
    for _ in range(5):
        for batch in batches.epoch():
            demo, kg, profile, mask = batch.inputs[0], batch.inputs[1], batch.inputs[2], batch.inputs[6]
            for b, user in enumerate(batch.users):
                blank = not demo[b].any() and not kg[b].any() and not profile[b].any()
                if blank:
                    assert mask[b].sum() > 0  # only a user with a history loses its profile
                    hidden += 1
                else:
                    np.testing.assert_array_equal(demo[b], batches.demo[user])
                    np.testing.assert_array_equal(profile[b], batches.profile[user])
                    kept_with_history += int(mask[b].sum() > 0)
    assert hidden and kept_with_history  # both happen at 0.5
    fresh = _Batches(rec, split.train, dataset, cfg, 4.0, np.random.default_rng(0))
    for stored, again in ((batches.demo, fresh.demo), (batches.kg, fresh.kg), (batches.profile, fresh.profile)):
        np.testing.assert_array_equal(stored, again)  # what was hidden was a batch's copy


def test_without_truncation_a_history_is_every_earlier_item(trained: StageResult, stages: Stages) -> None:
    """The ablation of the cold-start trick: n = min(max_history, position), the items just before the target."""
    from recsys_tasks.data.dataset import Dataset
    from recsys_tasks.model.batches import Batches as _Batches
    from recsys_tasks.model.recommender import Recommender

    dataset, split = Dataset.load(stages.snapshot), Split.load(stages.snapshot)
    rec = Recommender.load(trained.path("bundle"))
    cfg = FinetuneConfig(max_history=3, batch_size=4, empty_history_prob=0.0, truncate_histories=False)
    batches = _Batches(rec, split.train, dataset, cfg, 4.0, np.random.default_rng(0))
    ordered = split.train.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    sequences = [[rec.item_row[i] for i in g["item_id"]] for _, g in ordered.groupby("user_id", sort=True)]
    for batch in batches.epoch():
        hist, mask = batch.inputs[5], batch.inputs[6]
        for b, (user, position) in enumerate(zip(batch.users, batch.positions)):
            n = int(mask[b].sum())
            assert n == min(3, position)
            assert list(hist[b, :n]) == sequences[user][position - n : position]


def test_the_fusion_is_tuned_on_more_cuts_of_long_histories_only() -> None:
    """The fusion's queries: the first 0/5/10/20 items and 80% of every history, and 50% and 65%
    only of histories they leave more than 20 items of (the long-history buckets)."""
    from types import SimpleNamespace

    from recsys_tasks.model.held_out import fusion_queries as _fusion_queries

    items = [str(i) for i in range(200)]
    rows = [("long", items[i], 5.0, 1000 + i) for i in range(60)] + [
        ("short", items[100 + i], 5.0, 1000 + i) for i in range(30)
    ]
    held = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    users = pd.DataFrame(
        {
            "user_id": ["long", "short"],
            "age": [30, 40],
            "gender": ["F", "M"],
            "occupation": ["writer", "other"],
            "zip_code": ["", ""],
        }
    )
    rec = SimpleNamespace(item_row={item: row for row, item in enumerate(items)})
    found = {
        name: sorted((q.user_id, len(q.history)) for q in queries)
        for name, queries, _ in _fusion_queries(rec, SimpleNamespace(users=users), held, 4.0, FinetuneConfig())
    }
    assert found == {
        "at_0": [("long", 0), ("short", 0)],
        "at_5": [("long", 5), ("short", 5)],
        "at_10": [("long", 10), ("short", 10)],
        "at_20": [("long", 20), ("short", 20)],
        "warm_50": [("long", 30)],
        "warm_65": [("long", 39)],
        "warm": [("long", 48), ("short", 24)],
    }
    # the config's supports and cuts are the ones used
    cfg = FinetuneConfig(fusion_support=(3,), fusion_warm_cuts=(0.5,))
    found = {
        name: sorted((q.user_id, len(q.history)) for q in queries)
        for name, queries, _ in _fusion_queries(rec, SimpleNamespace(users=users), held, 4.0, cfg)
    }
    assert found == {"at_3": [("long", 3), ("short", 3)], "warm_50": [("long", 30)]}


# ---------------------------------------------------------------- scale: sampled softmax, bounds, blocks
@pytest.mark.slow
def test_a_sampled_softmax_run_trains_and_a_too_big_catalogue_skips_ease_with_a_reason(
    stages: Stages, tmp_path: Path
) -> None:
    """``negatives`` below the trainable items: the sampled path (the same bundle files); ``ease_max_items``
    below them: no EASE, said in the metrics and the result's info."""
    cfg = FinetuneConfig(**{**stages.cfg.__dict__, "negatives": 4, "ease_max_items": 3, "id_epochs": 1})
    result = _finetune(stages, tmp_path / "sampled", cfg)
    assert result.metrics["sampled_softmax"] == 1.0 and result.metrics["ease_skipped"] == 1.0
    assert "ease_max_items=3" in result.info["ease_skipped"]
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert {p.name for p in result.path("bundle").iterdir()} == BUNDLE_FILES - {"ease.npy"}
    exact = _finetune(stages, tmp_path / "exact", FinetuneConfig(**{**stages.cfg.__dict__, "negatives": 12}))
    assert exact.metrics["sampled_softmax"] == 0.0 and exact.metrics["ease_skipped"] == 0.0


def test_steps_per_epoch_cuts_a_pass_into_rounds_between_validations(stages: Stages, tmp_path: Path) -> None:
    """Training pairs in batches of 2 are ceil(pairs / 2) steps a pass; ``steps_per_epoch=3`` validates after 3
    steps of a fresh permutation each round, 0 after whole passes."""
    base = {**stages.cfg.__dict__, "batch_size": 2, "id_epochs": 0, "fusion": False, "content_map": False}
    cut = _finetune(stages, tmp_path / "cut", FinetuneConfig(**{**base, "steps_per_epoch": 3}))
    whole = _finetune(stages, tmp_path / "whole", FinetuneConfig(**{**base, "steps_per_epoch": 0}))
    per_pass = math.ceil(whole.metrics["n_train_pairs"] / 2)
    assert per_pass > 3
    for result, steps in ((cut, 3), (whole, per_pass)):
        curves = pd.read_csv(result.path("curves"))
        assert list(curves["steps"]) == [steps] * len(curves)
        assert result.metrics["steps_trained"] == steps * len(curves)


def test_held_out_users_are_capped_and_the_cap_keeps_the_same_draw() -> None:
    from recsys_tasks.model.held_out import held_out_users

    train = pd.DataFrame({"user_id": [f"u{i:03d}" for i in range(200)]})
    full = held_out_users(train, 0.1, 0.1, np.random.default_rng(3))
    capped = held_out_users(train, 0.1, 0.1, np.random.default_rng(3), 5, 7)
    assert (len(full[0]), len(full[1])) == (20, 20) and (len(capped[0]), len(capped[1])) == (5, 7)
    assert not capped[0] & capped[1]
    assert held_out_users(train, 0.1, 0.1, np.random.default_rng(3), 50, 50) == full  # a cap above: unchanged


def test_validation_in_blocks_is_the_validation_in_one(trained: StageResult, stages: Stages) -> None:
    from recsys_tasks.data.dataset import Dataset
    from recsys_tasks.model.held_out import validate, validation_queries
    from recsys_tasks.model.recommender import Recommender

    rec = Recommender.load(trained.path("bundle"))
    split, dataset = Split.load(stages.snapshot), Dataset.load(stages.snapshot)
    validation = validation_queries(rec, dataset, split.train, 4.0, (0, 2))
    assert validate(rec, validation, block=1) == pytest.approx(validate(rec, validation, block=1000))


def test_batches_from_dataloader_workers_cover_every_pair_once(trained: StageResult, stages: Stages) -> None:
    from recsys_tasks.data.dataset import Dataset
    from recsys_tasks.model.batches import Batches, loader
    from recsys_tasks.model.recommender import Recommender

    dataset, split = Dataset.load(stages.snapshot), Split.load(stages.snapshot)
    rec = Recommender.load(trained.path("bundle"))
    cfg = FinetuneConfig(max_history=3, batch_size=3)
    batches = Batches(rec, split.train, dataset, cfg, 4.0, np.random.default_rng(0))
    in_process = [(int(u), int(p)) for b in loader(batches, 0) for u, p in zip(b.users, b.positions)]
    workers = [(int(u), int(p)) for b in loader(batches, 2) for u, p in zip(b.users, b.positions)]
    pairs = sorted(zip(batches.pairs_user.tolist(), batches.pairs_position.tolist()))
    assert sorted(in_process) == pairs and sorted(workers) == pairs


def test_the_batch_loader_leaves_torch_global_generator_alone() -> None:
    """A DataLoader draws a seed per epoch; from its own generator, so the DropoutNet masks (torch's global
    generator) draw what they drew before there was a loader: the same seed, the same model."""
    from recsys_tasks.model.batches import loader

    class Two:
        rng, n_pairs = np.random.default_rng(0), 2

        def epoch(self):
            yield from ("a", "b")

    torch.manual_seed(0)
    assert list(loader(Two(), 0)) == ["a", "b"]  # type: ignore[arg-type]
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))

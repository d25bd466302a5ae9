"""``text.adapt`` (`text.adapt`): LoRA pairs from the training interactions only, an adapter kept only where it beats
the base encoder on held-out users, and the adapted encoder carried from text_embed into the bundle and serving."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recsys_tasks.config import ConfigError, PipelineConfig, TextConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.split import Split
from recsys_tasks.text.adapt import Pairs, adapt_encoder, training_pairs
from recsys_tasks.text.encoder import TextEncoder
from recsys_tasks.text.texts import item_text


def _dataset() -> Dataset:
    """Two tastes: users 1-20 like the space films (1-4), users 21-40 the farm films (5-8); item 9 is new."""
    words = {1: "rocket", 2: "galaxy", 3: "orbit", 4: "astronaut", 5: "tractor", 6: "harvest", 7: "barn", 8: "cattle"}
    items = pd.DataFrame(
        {
            "item_id": [str(i) for i in range(1, 10)],
            "title": [f"The {words.get(i, 'secret')} story" for i in range(1, 10)],
            "year": [1990] * 9,
            "genres": ["Sci-Fi"] * 4 + ["Drama"] * 4 + ["Horror"],
            "description": [""] * 9,
        }
    )
    rows = [(str(u), str(i), 5.0, u * 10 + i) for u in range(1, 21) for i in range(1, 5)]
    rows += [(str(u), str(i), 5.0, u * 10 + i) for u in range(21, 41) for i in range(5, 9)]
    rows += [(str(u), "9", 1.0, 999) for u in range(1, 41)]  # disliked: never a pair
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    users = pd.DataFrame(
        {"user_id": [str(u) for u in range(1, 41)], "age": 30, "gender": "M", "occupation": "engineer", "zip_code": ""}
    )
    return Dataset(inter, users, items, pd.DataFrame(columns=["head_id", "relation_id", "tail_id"]))


def test_pairs_come_from_liked_training_items_of_one_user_and_held_out_users_apart() -> None:
    dataset = _dataset()
    train, held = training_pairs(dataset, dataset.interactions, 4.0, max_pairs=600, seed=0)
    texts = {item_text(r): int(r["item_id"]) for r in dataset.items.to_dict("records")}
    space, farm = {1, 2, 3, 4}, {5, 6, 7, 8}
    assert len(train) + len(held) <= 600 and len(held) > 0
    for pairs in (train, held):
        for anchor, positive in zip(pairs.anchors, pairs.positives):
            item = texts[positive]  # a positive is always a liked item's text
            assert item != 9
            if anchor in texts:  # item -> item: both liked by one user, so of one taste
                assert {texts[anchor], item} <= space or {texts[anchor], item} <= farm
            elif anchor.startswith("I like"):  # the stated taste of that user's liked genres
                assert anchor == ("I like Sci-Fi movies." if item in space else "I like Drama movies.")
            else:
                assert anchor == "A 25-34 year old male engineer."
    again = training_pairs(dataset, dataset.interactions, 4.0, max_pairs=600, seed=0)
    assert again == (train, held)


def test_pairs_are_bounded_whatever_the_number_of_users() -> None:
    dataset = _dataset()
    train, held = training_pairs(dataset, dataset.interactions, 4.0, max_pairs=12, seed=1)
    assert len(train) + len(held) <= 12


def test_an_adapter_that_beats_the_base_encoder_is_merged_and_changes_the_vectors(tiny_bert: str) -> None:
    dataset = _dataset()
    train, held = training_pairs(dataset, dataset.interactions, 4.0, max_pairs=600, seed=0)
    cfg = TextConfig(model=tiny_bert, device="cpu", adapt=True, adapt_epochs=3, adapt_lr=5e-3, adapt_batch=16)
    base, encoder = TextEncoder(tiny_bert, "cpu"), TextEncoder(tiny_bert, "cpu")
    report = adapt_encoder(encoder, train, held, cfg, seed=0)
    assert report["adapt_used"] == 1.0 and report["adapt_loss"] < report["adapt_base_loss"]
    assert not any("lora" in name for name, _ in encoder.model.named_parameters())  # merged: a plain encoder
    texts = [item_text(r) for r in dataset.items.to_dict("records")]
    before, after = base.encode(texts), encoder.encode(texts)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, rtol=1e-5)


def test_an_adapter_that_does_not_beat_the_base_encoder_is_dropped(tiny_bert: str) -> None:
    dataset = _dataset()
    train, held = training_pairs(dataset, dataset.interactions, 4.0, max_pairs=120, seed=0)
    cfg = TextConfig(model=tiny_bert, device="cpu", adapt=True, adapt_epochs=1, adapt_lr=1e-12)
    base, encoder = TextEncoder(tiny_bert, "cpu"), TextEncoder(tiny_bert, "cpu")
    report = adapt_encoder(encoder, train, held, cfg, seed=0)
    assert report["adapt_used"] == 0.0
    texts = [item_text(r) for r in dataset.items.to_dict("records")]
    np.testing.assert_array_equal(base.encode(texts), encoder.encode(texts))


def test_too_few_pairs_is_an_error_that_says_so(tiny_bert: str) -> None:
    with pytest.raises(ValueError, match="text.adapt: 1 training pairs"):
        adapt_encoder(TextEncoder(tiny_bert, "cpu"), Pairs(["a"], ["b"]), Pairs([], []), TextConfig(), seed=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["text.adapt=true", "text.shards=2"], r"text\.shards.*set text\.shards=1 with text\.adapt"),
        (["text.adapt_batch=1"], r"text\.adapt_batch.*1.*at least 2"),
        (["text.adapt_lr=0"], r"text\.adapt_lr.*positive"),
    ],
)
def test_adapt_settings_that_cannot_work_are_config_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PipelineConfig().with_overrides(overrides)


def test_text_embed_keeps_the_adapted_encoder_and_the_bundle_carries_it_to_serving(
    tiny_snapshot: Any, tiny_kg: Any, tiny_bert: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recsys_tasks.config import FinetuneConfig
    from recsys_tasks.model.bundle import encoder_path
    from recsys_tasks.model.finetune import finetune
    from recsys_tasks.model.recommender import Recommender
    from recsys_tasks.text.embed import adapted_encoder, text_embed

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = TextConfig(model=tiny_bert, device="cpu", adapt=True, adapt_epochs=2, adapt_lr=5e-3, adapt_batch=8)
    text = text_embed(cfg, tiny_snapshot.out_dir, tmp_path / "text")
    train = Split.load(tiny_snapshot.out_dir).train
    assert text.metrics["adapt_pairs"] > 0 and len(train)
    assert text.metrics["adapt_used"] == 1.0  # seeded: on the tiny data the adapter beats the base encoder
    encoder_dir = adapted_encoder(text.out_dir)
    assert encoder_dir is not None and Path(text.artifacts["encoder"]) == Path(encoder_dir)
    ft = finetune(replace(FinetuneConfig(), epochs=1, id_epochs=0, device="cpu"), tiny_snapshot.out_dir,
                  tiny_kg.out_dir, text.out_dir, tmp_path / "ft", tiny_bert)  # fmt: skip
    bundle_dir = Path(ft.artifacts["bundle"])
    assert (bundle_dir / "text_encoder" / "config.json").exists()
    copy = tmp_path / "copy"
    shutil.copytree(bundle_dir, copy)
    moved = tmp_path / "elsewhere"
    bundle_dir.rename(moved)  # a registered model is downloaded anywhere: the encoder goes with it
    rec = Recommender.load(moved)
    assert encoder_path(rec.meta) == str(moved / "text_encoder")
    # its identity (what ingested items' vectors are checked against) is the same wherever it lies
    assert rec.meta["text_model"].startswith("bundled-encoder:")
    assert Recommender.load(copy).meta["text_model"] == rec.meta["text_model"]
    sentence = "I like Comedy movies."
    stored = rec.bundle.text_vectors[rec.bundle.texts.index(sentence)]
    live = TextEncoder(encoder_path(rec.meta), "cpu").encode([sentence])[0]
    np.testing.assert_allclose(live, stored, atol=1e-5)  # serving encodes as text_embed did
    base = TextEncoder(tiny_bert, "cpu").encode([sentence])[0]
    assert not np.allclose(base, stored, atol=1e-4)

"""The cold-start split, on synthetic interactions whose right answer is known.

50 users x 10 interactions over 40 items, timestamps shuffled within each user so that file
order is not time order: 20% of users is exactly 10 cold users, 20% of items exactly 8 cold
items, and 20% of a user's 10 interactions exactly the last 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_tasks.config import ExtractConfig
from recsys_tasks.data.split import PARTS, Split, make_split

N_USERS, N_ITEMS, PER_USER = 50, 40, 10


@pytest.fixture
def interactions() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for u in range(N_USERS):
        items = rng.choice(N_ITEMS, size=PER_USER, replace=False)
        times = rng.permutation(PER_USER) * 100 + 1_000_000 + u  # distinct, out of file order
        rows += [(f"u{u:02d}", f"i{i:02d}", float(rng.integers(1, 6)), int(t)) for i, t in zip(items, times)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def _last_by_time(frame: pd.DataFrame, n: int) -> set[tuple[str, str]]:
    tail = frame.sort_values("timestamp").groupby("user_id").tail(n)
    return set(zip(tail["user_id"], tail["item_id"]))


def _pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["user_id"], frame["item_id"]))


def test_same_seed_gives_the_same_split(interactions: pd.DataFrame) -> None:
    a = make_split(interactions, ExtractConfig(seed=1))
    b = make_split(interactions, ExtractConfig(seed=1))
    assert a.cold_users == b.cold_users and a.cold_items == b.cold_items
    pd.testing.assert_frame_equal(a.interactions, b.interactions)


def test_another_seed_gives_another_split(interactions: pd.DataFrame) -> None:
    a = make_split(interactions, ExtractConfig(seed=1))
    b = make_split(interactions, ExtractConfig(seed=2))
    assert a.cold_users != b.cold_users
    assert a.cold_items != b.cold_items
    assert a.seed == 1 and b.seed == 2


def test_split_does_not_depend_on_row_order(interactions: pd.DataFrame) -> None:
    cfg = ExtractConfig()
    a = make_split(interactions, cfg)
    shuffled = interactions.sample(frac=1, random_state=3).reset_index(drop=True)
    b = make_split(shuffled, cfg)
    assert a.cold_users == b.cold_users and a.cold_items == b.cold_items
    key = ["user_id", "item_id"]
    pd.testing.assert_frame_equal(
        a.interactions.sort_values(key).reset_index(drop=True), b.interactions.sort_values(key).reset_index(drop=True)
    )


def test_fractions_of_users_and_items_are_held_out(interactions: pd.DataFrame) -> None:
    split = make_split(interactions, ExtractConfig())
    assert len(split.cold_users) == 10  # 20% of 50
    assert len(split.cold_items) == 8  # 20% of 40
    assert set(split.cold_users) <= set(interactions["user_id"])
    assert set(split.cold_items) <= set(interactions["item_id"])
    assert list(split.cold_users) == sorted(split.cold_users)
    other = make_split(interactions, ExtractConfig(cold_user_frac=0.5, cold_item_frac=0.1))
    assert len(other.cold_users) == 25 and len(other.cold_items) == 4


def test_every_interaction_gets_exactly_one_part_and_input_is_untouched(interactions: pd.DataFrame) -> None:
    before = interactions.copy()
    split = make_split(interactions, ExtractConfig())
    pd.testing.assert_frame_equal(interactions, before)
    assert set(split.interactions["part"]) == set(PARTS)
    pd.testing.assert_frame_equal(split.interactions.drop(columns="part"), interactions)  # same rows, same order
    counts = split.counts()
    assert sum(counts[f"n_{p}"] for p in PARTS) == len(interactions)
    assert counts["n_cold_users"] == 10 and counts["n_cold_items"] == 8


def test_no_cold_user_interaction_is_in_train(interactions: pd.DataFrame) -> None:
    split = make_split(interactions, ExtractConfig())
    of_cold_users = split.interactions["user_id"].isin(split.cold_users)
    assert (split.interactions.loc[of_cold_users, "part"] == "cold_user").all()
    assert of_cold_users.sum() == 10 * PER_USER
    assert not split.train["user_id"].isin(split.cold_users).any()


def test_no_cold_item_interaction_is_in_train_or_warm_test(interactions: pd.DataFrame) -> None:
    split = make_split(interactions, ExtractConfig())
    for part in ("train", "warm_test"):
        assert not split.part(part)["item_id"].isin(split.cold_items).any(), part
    cold_item = split.part("cold_item")
    assert cold_item["item_id"].isin(split.cold_items).all()
    assert not cold_item["user_id"].isin(split.cold_users).any()  # a cold user's row is cold_user


def test_warm_test_is_the_last_20_percent_by_time_of_each_warm_user(interactions: pd.DataFrame) -> None:
    split = make_split(interactions, ExtractConfig(cold_item_frac=0))
    warm = split.interactions[~split.interactions["user_id"].isin(split.cold_users)]
    assert _pairs(split.part("warm_test")) == _last_by_time(warm, 2)
    assert split.part("warm_test").groupby("user_id").size().eq(2).all()
    assert len(split.train) == 40 * (PER_USER - 2)


def test_cut_by_time_is_taken_before_cold_items_are_set_aside(interactions: pd.DataFrame) -> None:
    """Cold items take their rows out of train/test, but do not move a warm user's 80/20 cut."""
    split = make_split(interactions, ExtractConfig())
    warm = split.interactions[~split.interactions["user_id"].isin(split.cold_users)]
    tail = _last_by_time(warm, 2)
    assert _pairs(split.part("warm_test")) == {p for p in tail if p[1] not in split.cold_items}
    assert not (_pairs(split.train) & tail)
    # Within each warm user, every training event precedes every test event.
    last_train = split.train.groupby("user_id")["timestamp"].max()
    first_test = split.part("warm_test").groupby("user_id")["timestamp"].min()
    both = last_train.index.intersection(first_test.index)
    assert (last_train[both] < first_test[both]).all()


def test_ties_in_time_are_broken_by_item_id() -> None:
    inter = pd.DataFrame(
        {"user_id": ["u"] * 5, "item_id": ["e", "d", "c", "b", "a"], "rating": [4.0] * 5, "timestamp": [7] * 5}
    )
    split = make_split(inter, ExtractConfig(cold_user_frac=0, cold_item_frac=0, warm_test_frac=0.2))
    assert split.part("warm_test")["item_id"].tolist() == ["e"]


def test_a_user_with_few_interactions_still_gets_one_test_interaction() -> None:
    inter = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "rating": [4.0, 3.0], "timestamp": [1, 2]})
    split = make_split(inter, ExtractConfig(cold_user_frac=0, cold_item_frac=0))
    assert split.interactions["part"].tolist() == ["train", "warm_test"]


def test_all_fractions_zero_puts_everything_in_train(interactions: pd.DataFrame) -> None:
    split = make_split(interactions, ExtractConfig(cold_user_frac=0, cold_item_frac=0, warm_test_frac=0))
    assert split.holdout is False
    assert (split.interactions["part"] == "train").all() and len(split.train) == len(interactions)
    assert split.cold_users == () and split.cold_items == ()


def test_zero_warm_test_fraction_keeps_warm_users_whole(interactions: pd.DataFrame) -> None:
    split = make_split(interactions, ExtractConfig(warm_test_frac=0))
    assert split.holdout is True
    assert split.counts()["n_warm_test"] == 0
    assert len(split.cold_users) == 10 and len(split.cold_items) == 8


def test_save_and_load_round_trip(interactions: pd.DataFrame, tmp_path: Path) -> None:
    split = make_split(interactions, ExtractConfig(seed=5))
    paths = split.save(tmp_path)
    assert set(paths) == {"split", "split_meta"} and all(Path(p).is_file() for p in paths.values())
    loaded = Split.load(tmp_path)
    assert (loaded.cold_users, loaded.cold_items, loaded.seed, loaded.holdout) == (
        split.cold_users,
        split.cold_items,
        5,
        True,
    )
    pd.testing.assert_frame_equal(loaded.interactions, split.interactions, check_index_type=False)

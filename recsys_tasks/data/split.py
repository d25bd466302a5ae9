"""The one cold-start split of shared/EVALUATION.md, built once in extract and saved.

Every interaction gets a ``part``:
- ``cold_user``: any interaction of a held-out user (20% of users by id);
- ``cold_item``: a warm user's interaction with a held-out item (20% of items by id);
- ``warm_test``: the last 20% (by timestamp) of a warm user's interactions, on warm items;
- ``train``: the first 80% of a warm user's interactions, on warm items.
The per-user 80/20 cut is taken over all of a warm user's interactions before cold items
are set aside, so it does not depend on which items were held out. Default seed: 42.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_tasks.artifacts import read_json, write_json
from recsys_tasks.config import ExtractConfig

PARTS = ("train", "warm_test", "cold_user", "cold_item")


@dataclass(frozen=True)
class Split:
    interactions: pd.DataFrame  # the dataset's interactions plus a "part" column
    cold_users: tuple[str, ...]
    cold_items: tuple[str, ...]
    seed: int
    holdout: bool

    def part(self, name: str) -> pd.DataFrame:
        return self.interactions[self.interactions["part"] == name]

    @property
    def train(self) -> pd.DataFrame:
        return self.part("train")

    def counts(self) -> dict[str, int]:
        counts = self.interactions["part"].value_counts()
        out = {f"n_{p}": int(counts.get(p, 0)) for p in PARTS}
        out.update(n_cold_users=len(self.cold_users), n_cold_items=len(self.cold_items))
        return out

    def save(self, directory: Path) -> dict[str, str]:
        inter = directory / "split.parquet"
        self.interactions.to_parquet(inter, index=False)
        meta = write_json(
            directory / "split.json",
            {
                "seed": self.seed,
                "holdout": self.holdout,
                "cold_users": list(self.cold_users),
                "cold_items": list(self.cold_items),
                **self.counts(),
            },
        )
        return {"split": str(inter), "split_meta": str(meta)}

    @classmethod
    def load(cls, directory: str | Path) -> Split:
        directory = Path(directory)
        meta = read_json(directory / "split.json")
        return cls(
            pd.read_parquet(directory / "split.parquet"),
            tuple(meta["cold_users"]),
            tuple(meta["cold_items"]),
            meta["seed"],
            meta["holdout"],
        )


def make_split(interactions: pd.DataFrame, cfg: ExtractConfig) -> Split:
    """Assign every interaction to a part, deterministically for a given seed."""
    inter = interactions.copy()
    if not cfg.holdout:
        inter["part"] = "train"
        return Split(inter, (), (), cfg.seed, False)
    rng = np.random.default_rng(cfg.seed)
    cold_users = _holdout_ids(inter["user_id"], cfg.cold_user_frac, rng)
    cold_items = _holdout_ids(inter["item_id"], cfg.cold_item_frac, rng)

    # Order each user's interactions by time (item id breaks ties, so the split is stable).
    inter = inter.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    position = inter.groupby("user_id", sort=False).cumcount()
    size = inter.groupby("user_id", sort=False)["item_id"].transform("size")
    n_test = np.where(cfg.warm_test_frac > 0, np.maximum(1, np.round(size * cfg.warm_test_frac)), 0)
    is_test = position >= size - n_test

    part = np.where(is_test, "warm_test", "train").astype(object)
    part[inter["item_id"].isin(cold_items).to_numpy()] = "cold_item"
    part[inter["user_id"].isin(cold_users).to_numpy()] = "cold_user"
    inter["part"] = part
    return Split(inter.sort_index(), tuple(sorted(cold_users)), tuple(sorted(cold_items)), cfg.seed, True)


def _holdout_ids(ids: pd.Series, frac: float, rng: np.random.Generator) -> set[str]:
    unique = np.sort(ids.unique())
    n = int(round(len(unique) * frac))
    return set(rng.permutation(unique)[:n].tolist())

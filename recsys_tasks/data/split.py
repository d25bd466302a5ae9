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
from recsys_tasks.data.dataset import write_parquet

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
        write_parquet(self.interactions, inter)
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
    """Assign every interaction to a part, deterministically for a given seed (linear: codes, no per-user loop)."""
    inter = interactions.copy()
    if not cfg.holdout:
        inter["part"] = "train"
        return Split(inter, (), (), cfg.seed, False)
    rng = np.random.default_rng(cfg.seed)
    user_row, users = pd.factorize(inter["user_id"])
    item_row, items = pd.factorize(inter["item_id"])
    cold_users = _holdout_ids(users, cfg.cold_user_frac, rng)
    cold_items = _holdout_ids(items, cfg.cold_item_frac, rng)
    is_test = _last_by_time(user_row, inter["timestamp"].to_numpy(), _rank(items)[item_row], cfg.warm_test_frac)
    code = is_test.astype(np.int8)  # PARTS[1] = warm_test, PARTS[0] = train
    code[pd.Index(items).isin(cold_items)[item_row]] = PARTS.index("cold_item")
    code[pd.Index(users).isin(cold_users)[user_row]] = PARTS.index("cold_user")
    inter["part"] = np.array(PARTS, dtype=object)[code]
    return Split(inter, tuple(sorted(cold_users)), tuple(sorted(cold_items)), cfg.seed, True)


def _rank(ids: pd.Index) -> np.ndarray:
    """Each id's position in sorted order (the tie-break on equal timestamps)."""
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.argsort(np.asarray(ids, dtype=object), kind="stable")] = np.arange(len(ids))
    return rank


def _last_by_time(user: np.ndarray, timestamp: np.ndarray, item_rank: np.ndarray, frac: float) -> np.ndarray:
    """Whether each interaction is among its user's last ``frac`` by time (at least one per user when
    ``frac`` > 0; item id breaks ties, so the cut is stable)."""
    if frac <= 0 or not len(user):
        return np.zeros(len(user), dtype=bool)
    order = _order_by(user, timestamp, item_rank)
    size = np.bincount(user)
    start = np.concatenate(([0], np.cumsum(size)[:-1]))
    sorted_user = user[order]
    position = np.arange(len(order)) - start[sorted_user]
    n_test = np.maximum(1, np.round(size * frac))[sorted_user]
    is_test = np.empty(len(order), dtype=bool)
    is_test[order] = position >= size[sorted_user] - n_test
    return is_test


def _order_by(user: np.ndarray, timestamp: np.ndarray, item_rank: np.ndarray) -> np.ndarray:
    """The order by user, then timestamp, then item: two sorts of one packed int64 key each where the
    values fit (faster than a three-key lexsort), else the lexsort."""
    n, span = len(user), int(timestamp.max()) - int(timestamp.min()) + 1
    n_items = int(item_rank.max()) + 1
    if span * n_items >= 2**62 or (int(user.max()) + 1) * n >= 2**62:
        return np.lexsort((item_rank, timestamp, user))
    time_item = (timestamp - timestamp.min()) * n_items + item_rank
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(time_item)] = np.arange(n)  # ties only across users
    return np.argsort(user.astype(np.int64) * n + rank)  # keys are distinct


def _holdout_ids(ids: pd.Index, frac: float, rng: np.random.Generator) -> set[str]:
    unique = np.sort(np.asarray(ids, dtype=object))
    n = int(round(len(unique) * frac))
    return set(rng.permutation(unique)[:n].tolist())

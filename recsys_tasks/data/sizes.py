"""The smallest data the protocol and the stages can use, checked in extract before anything is written.

Too little data otherwise fails (or evaluates nothing) minutes later, after the training. What is
needed (docs/evaluation.md), each only where its fraction is above 0:
- users and items: at least one held out (cold) and one kept (warm) at the configured fractions;
- training: at least one positive (the model learns from liked pairs), so at least one warm user;
- per slice, at least one user with a positive: a cold user with a positive (cold-user@0, @0+text),
  a warm user with a positive on a cold item (cold-item), a warm user with a positive in the warm
  test part (warm). A slice without one is left out of the evaluation (a warning); with a holdout
  and every slice empty, nothing would be evaluated, which is an error.
"""

from __future__ import annotations

import pandas as pd

from recsys_tasks.config import ExtractConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.split import Split
from recsys_tasks.data.tables import DataValidationError

MIN_SLICE_USERS = 1  # users with a positive in each slice
MIN_TRAIN_POSITIVES = 1  # positives in the training part
_SEARCH = 10_000  # the largest count `min_ids` looks at


def min_ids(frac: float) -> int | None:
    """The fewest ids of which ``frac`` (rounded, as the split rounds) holds out at least one and keeps
    at least one; 1 when nothing is held out; None when no count does (``frac`` rounds to all of them)."""
    if frac <= 0:
        return 1
    return next((n for n in range(2, _SEARCH) if 1 <= round(n * frac) < n), None)


def check_sizes(dataset: Dataset, split: Split, cfg: ExtractConfig, source: str) -> list[str]:
    """Raise one `DataValidationError` line naming every count that is short, and by how much; return
    the slices that will be empty (evaluated without them) when some are not."""
    short = [
        *_ids_short("users", dataset.users["user_id"].nunique(), cfg.cold_user_frac, "cold_user_frac"),
        *_ids_short("items", dataset.items["item_id"].nunique(), cfg.cold_item_frac, "cold_item_frac"),
    ]
    inter = split.interactions
    positive = inter[inter["rating"] >= cfg.positive_threshold]
    train_positives = int((positive["part"] == "train").sum())
    if train_positives < MIN_TRAIN_POSITIVES:
        short.append(
            f"training part: {train_positives} positives (rating >= {cfg.positive_threshold:g}), "
            f"need at least {MIN_TRAIN_POSITIVES} (short by {MIN_TRAIN_POSITIVES - train_positives})"
        )
    empty: list[str] = []
    if split.holdout:
        slices = (
            ("cold-user slices", "cold_user", cfg.cold_user_frac, "cold users with a positive"),
            ("cold-item slice", "cold_item", cfg.cold_item_frac, "warm users with a positive on a cold item"),
            ("warm slice", "warm_test", cfg.warm_test_frac, "warm users with a positive in the warm test part"),
        )
        held = [(name, part, who) for name, part, frac, who in slices if frac > 0]
        empty = [line for name, part, who in held for line in _slice_short(name, _users_in(positive, part), who)]
        if held and len(empty) == len(held):  # nothing would be evaluated
            short += empty
    if short:
        raise DataValidationError(f"{source}: too little data for the split and the stages: {'; '.join(short)}")
    return empty


def _ids_short(what: str, count: int, frac: float, knob: str) -> list[str]:
    need = min_ids(frac)
    if need is None:
        return [f"{what}: {knob} {frac:g} holds out every one of them; it must leave some {what} warm"]
    if count >= need:
        return []
    reason = f" (one cold and one warm at {knob} {frac:g})" if frac > 0 else ""
    return [f"{what}: {count}, need at least {need}{reason} (short by {need - count})"]


def _users_in(positive: pd.DataFrame, part: str) -> int:
    return int(positive.loc[positive["part"] == part, "user_id"].nunique())


def _slice_short(name: str, users: int, who: str) -> list[str]:
    if users >= MIN_SLICE_USERS:
        return []
    return [f"{name}: {users} {who}, need at least {MIN_SLICE_USERS} (short by {MIN_SLICE_USERS - users})"]

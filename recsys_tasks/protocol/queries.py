"""What a ranker is asked: one `Query` per user, scored by any `Scorer` (model or baseline).

The query carries only what the protocol lets a ranker see for that slice, so the model and
the baselines cannot be given different information by accident.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

__all__ = ["PROFILE_FIELDS", "Query", "Scorer", "history_of", "profile_of"]

PROFILE_FIELDS = ("age", "gender", "occupation", "zip_code")


@dataclass(frozen=True)
class Query:
    """One user to rank the catalog for."""

    user_id: str  # may be unknown to the model (a cold user)
    profile: dict[str, Any]  # age (int or None), gender, occupation, zip_code (str, may be "")
    history: tuple[tuple[str, float, int], ...]  # (item_id, rating, timestamp), oldest first
    text: str | None = None  # stated taste, e.g. "I like Sci-Fi and Horror movies."

    @property
    def history_items(self) -> tuple[str, ...]:
        return tuple(item for item, _, _ in self.history)


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores the full catalog (``dataset.items`` row order); higher is better."""

    name: str

    def score(self, queries: Sequence[Query]) -> np.ndarray:
        """Float32 (n_queries, n_items) scores."""
        ...


def profile_of(row: Mapping[str, Any] | None) -> dict[str, Any]:
    """A user's profile dict from a ``dataset.users`` row (None: an unknown user, all empty)."""
    row = row or {}
    age = row.get("age")
    if age is pd.NA or (isinstance(age, float) and np.isnan(age)):
        age = None
    return {
        "age": None if age is None else int(age),
        "gender": _text(row.get("gender")),
        "occupation": _text(row.get("occupation")),
        "zip_code": _text(row.get("zip_code")),
    }


def history_of(interactions: pd.DataFrame) -> tuple[tuple[str, float, int], ...]:
    """(item_id, rating, timestamp) tuples, oldest first (item id breaks ties, as in the split)."""
    ordered = interactions.sort_values(["timestamp", "item_id"], kind="stable")
    return tuple(
        zip(
            ordered["item_id"].astype(str).tolist(),
            ordered["rating"].astype(float).tolist(),
            ordered["timestamp"].astype("int64").tolist(),
        )
    )


def _text(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)

"""The validated, typed dataset and its Parquet snapshot.

Tables (all ids are strings: pandas' Arrow-backed ``str``):
- interactions: user_id, item_id, rating (float32), timestamp (int64, epoch seconds)
- users: user_id, age (Int16, may be missing), gender, occupation, zip_code
- items: item_id, title, year (Int32, may be missing), genres ("|"-joined), description, entity_id
- kg: head_id, relation_id, tail_id (only triples touching an item's entity are kept)

The snapshot stores them as typed columnar Parquet (zstd over dictionary-encoded pages), read back with
the same types (docs/decisions/0016-typed-snapshots.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TABLES = ("interactions", "users", "items", "kg")


@dataclass(frozen=True)
class Dataset:
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    kg: pd.DataFrame

    def save(self, directory: Path) -> dict[str, str]:
        paths = {}
        for name in TABLES:
            path = directory / f"{name}.parquet"
            write_parquet(getattr(self, name), path)
            paths[name] = str(path)
        return paths

    @classmethod
    def load(cls, directory: str | Path) -> Dataset:
        directory = Path(directory)
        return cls(**{name: pd.read_parquet(directory / f"{name}.parquet") for name in TABLES})

    def fingerprint(self) -> str:
        """Content hash of every table (row order and column order included)."""
        digest = hashlib.sha256()
        for name in TABLES:
            frame = getattr(self, name)
            digest.update(name.encode())
            digest.update(",".join(frame.columns).encode())
            digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        return digest.hexdigest()[:16]

    def genre_lists(self) -> list[list[str]]:
        return [g.split("|") if g else [] for g in self.items["genres"]]


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """``frame`` as compact Parquet: zstd over Parquet's dictionary pages (ids, parts and ratings repeat)."""
    frame.to_parquet(path, index=False, compression="zstd")


_BAND_UPPER = ((18, "under 18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55"))
AGE_BANDS = tuple(label for _, label in _BAND_UPPER) + ("56+",)


def age_band(age: float | int | None) -> str:
    """MovieLens' age bands; used for demographic groups, KG entities and profile text."""
    if age is None or (isinstance(age, float) and np.isnan(age)) or age is pd.NA:
        return "unknown"
    age = int(age)
    for upper, label in _BAND_UPPER:
        if age < upper:
            return label
    return AGE_BANDS[-1]

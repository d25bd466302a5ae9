"""The typed dataset: Parquet round trip, a content fingerprint that sees every change, age bands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_tasks.config import ExtractConfig
from recsys_tasks.data.dataset import Dataset, age_band
from recsys_tasks.data.sources import load_source
from recsys_tasks.data.validate import validate


@pytest.fixture
def dataset(tiny_recbole_dir: Path) -> Dataset:
    return validate(load_source(str(tiny_recbole_dir)), ExtractConfig())[0]


def _with(dataset: Dataset, **tables: pd.DataFrame) -> Dataset:
    names = ("interactions", "users", "items", "kg")
    return Dataset(**{name: tables.get(name, getattr(dataset, name)) for name in names})


def test_save_and_load_keep_every_table_and_type(dataset: Dataset, tmp_path: Path) -> None:
    paths = dataset.save(tmp_path)
    assert set(paths) == {"interactions", "users", "items", "kg"}
    loaded = Dataset.load(tmp_path)
    for name in paths:
        pd.testing.assert_frame_equal(getattr(loaded, name), getattr(dataset, name), check_index_type=False)
    assert loaded.fingerprint() == dataset.fingerprint()


def test_fingerprint_is_stable_and_short(dataset: Dataset) -> None:
    assert dataset.fingerprint() == dataset.fingerprint()
    assert len(dataset.fingerprint()) == 16


def test_fingerprint_sees_a_changed_value(dataset: Dataset) -> None:
    inter = dataset.interactions.copy()
    inter.loc[0, "timestamp"] += 1
    assert _with(dataset, interactions=inter).fingerprint() != dataset.fingerprint()
    users = dataset.users.copy()
    users.loc[3, "occupation"] = "doctor"
    assert _with(dataset, users=users).fingerprint() != dataset.fingerprint()


def test_fingerprint_sees_row_order_and_dropped_rows(dataset: Dataset) -> None:
    kg = dataset.kg
    assert _with(dataset, kg=kg.iloc[::-1].reset_index(drop=True)).fingerprint() != dataset.fingerprint()
    assert _with(dataset, kg=kg.iloc[1:].reset_index(drop=True)).fingerprint() != dataset.fingerprint()


def test_genre_lists(dataset: Dataset) -> None:
    lists = dataset.genre_lists()
    assert len(lists) == 15
    assert lists[0] == ["Comedy", "Sci-Fi"] and lists[1] == ["Drama"]
    items = dataset.items.copy()
    items.loc[0, "genres"] = ""
    assert _with(dataset, items=items).genre_lists()[0] == []


@pytest.mark.parametrize(
    "age, band",
    [
        (1, "under 18"),
        (17, "under 18"),
        (18, "18-24"),
        (24, "18-24"),
        (25, "25-34"),
        (34, "25-34"),
        (35, "35-44"),
        (45, "45-49"),
        (49, "45-49"),
        (50, "50-55"),
        (55, "50-55"),
        (56, "56+"),
        (90, "56+"),
        (None, "unknown"),
        (float("nan"), "unknown"),
        (pd.NA, "unknown"),
        (np.int64(30), "25-34"),
        (30.0, "25-34"),
    ],
)
def test_age_band(age: object, band: str) -> None:
    assert age_band(age) == band  # type: ignore[arg-type]


def test_age_band_of_a_nullable_column_value(dataset: Dataset) -> None:
    users = dataset.users.copy()
    users.loc[0, "age"] = pd.NA
    assert age_band(users.loc[0, "age"]) == "unknown"
    assert age_band(users.loc[1, "age"]) == "25-34"  # 25 years

"""The reference figures of docs/operations.md ("Monitoring and drift"): MovieLens-100K's drift against its own
prefixes, the rating distance of small samples, and `measure`'s time on synthetic data.

    OMP_NUM_THREADS=1 .venv/bin/python bench/drift_reference.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_tasks.config import ExtractConfig
from recsys_tasks.data.drift import decide, measure, rating_tv
from recsys_tasks.data.sources import load_source
from recsys_tasks.data.validate import validate


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dataset, _ = validate(load_source("bundled"), ExtractConfig(), Path(tmp) / "interactions.parquet")
    inter = dataset.interactions
    times = inter["timestamp"].to_numpy()
    for q in (0.5, 0.8, 0.9, 0.95, 0.99):
        found = measure(inter, inter[times <= np.quantile(times, q)])
        figures = ", ".join(f"{k.removeprefix('drift_')}={v:.4f}" for k, v in found.items())
        print(f"prefix up to quantile {q}: {figures} -> {decide(found, 0.2, 100)}")
    rng = np.random.default_rng(0)
    ratings = inter["rating"].to_numpy()
    for n in (10, 30, 100, 300, 1000):
        values = [rating_tv(rng.choice(ratings, n), ratings) for _ in range(300)]
        print(f"{n} ratings drawn: mean {np.mean(values):.3f}, 99th percentile {np.quantile(values, 0.99):.3f}")
    for n in (1_000_000, 4_000_000):
        current = pd.DataFrame(
            {
                "user_id": pd.array(rng.integers(0, n // 20, n).astype(str), dtype="str"),
                "item_id": pd.array(rng.integers(0, 20_000, n).astype(str), dtype="str"),
                "rating": rng.integers(1, 6, n).astype("float32"),
                "timestamp": rng.integers(0, 10**9, n),
            }
        )
        previous = current.iloc[: int(n * 0.9)]
        start = time.perf_counter()
        measure(current, previous)
        print(f"measure on {n:,} against {len(previous):,} rows: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()

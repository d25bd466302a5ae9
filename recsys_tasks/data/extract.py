"""Stage 1, extract: read a source (files or a database), validate it, snapshot it to Parquet, build the split."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from recsys_tasks.artifacts import StageResult, atomic_dir, finish, write_json
from recsys_tasks.config import ExtractConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.drift import snapshot_drift
from recsys_tasks.data.sizes import check_sizes
from recsys_tasks.data.sources import load_source
from recsys_tasks.data.split import make_split
from recsys_tasks.data.validate import validate

log = logging.getLogger(__name__)


def extract(cfg: ExtractConfig, out_dir: str | Path) -> StageResult:
    """Validate ``cfg.source`` and write ``out_dir``: the snapshot, its fingerprint and the split.

    With ``cfg.previous_snapshot`` (SQL sources), only newer interactions are read and merged
    with that snapshot's before validation. Raises `DataValidationError` (naming file or table,
    column and row, or what is too small for the split and by how much) before anything is written.
    """
    raw = load_source(cfg.source, cfg.previous_snapshot or None, chunk_rows=cfg.sql_chunk_rows)
    with _spill_dir(out_dir) as spill:  # typed interactions land on disk piece by piece, then are read back
        dataset, report = validate(raw, cfg, spill / "interactions.parquet")
    report.update(raw.info, sample_users=cfg.sample_users)
    if cfg.sample_users:
        dataset = sample_users(dataset, cfg.sample_users, cfg.seed)
        report.update(n_interactions=len(dataset.interactions), n_users=len(dataset.users))  # describe the snapshot
    split = make_split(dataset.interactions, cfg)
    empty = check_sizes(dataset, split, cfg, raw.source)  # too little data fails now, not after the training
    for line in empty:
        log.warning("extract: %s: the slice is left out of the evaluation", line)
    report["empty_slices"] = empty
    # against the previous run's snapshot (`data.drift`); the newest time lets register find the newer interactions
    drift = snapshot_drift(dataset.interactions, out_dir, cfg, report["source"])
    report.update(drift=drift.report(), max_timestamp=_max_timestamp(dataset))
    fingerprint = dataset.fingerprint()
    with atomic_dir(out_dir) as tmp:
        artifacts = dataset.save(tmp)
        artifacts.update(split.save(tmp))
        artifacts["report"] = str(write_json(tmp / "report.json", {**report, "fingerprint": fingerprint}))
        metrics = {k: float(v) for k, v in report.items() if k.startswith(("n_", "dropped_"))}
        metrics.update({k: float(v) for k, v in split.counts().items()})
        metrics.update({**drift.metrics, "max_timestamp": float(report["max_timestamp"])})
        result = finish(
            StageResult(
                "extract",
                str(Path(out_dir)),
                artifacts,
                metrics,
                {
                    "fingerprint": fingerprint,
                    "split_fingerprint": _split_id(fingerprint, cfg),
                    "holdout": split.holdout,
                },
            ),
            tmp,
        )
    log.info("extract: %s", result.metrics)
    return result


@contextlib.contextmanager
def _spill_dir(out_dir: str | Path) -> Iterator[Path]:
    """A scratch folder beside ``out_dir`` (same disk), removed whatever happens."""
    parent = Path(out_dir).parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{Path(out_dir).name}.spill-", dir=parent) as scratch:
        yield Path(scratch)


def _max_timestamp(dataset: Dataset) -> int:
    return int(dataset.interactions["timestamp"].max()) if len(dataset.interactions) else 0


def _split_id(fingerprint: str, cfg: ExtractConfig) -> str:
    """Identifies "the same data": the snapshot content plus everything that shapes the split."""
    return (
        f"{fingerprint}-s{cfg.seed}-u{cfg.cold_user_frac:g}-i{cfg.cold_item_frac:g}"
        f"-w{cfg.warm_test_frac:g}-p{cfg.positive_threshold:g}"
    )


def sample_users(dataset: Dataset, n: int, seed: int) -> Dataset:
    users = np.sort(dataset.users["user_id"].unique())
    keep = set(np.random.default_rng(seed).permutation(users)[:n].tolist())
    inter = dataset.interactions[dataset.interactions["user_id"].isin(keep)].reset_index(drop=True)
    return Dataset(
        inter, dataset.users[dataset.users["user_id"].isin(keep)].reset_index(drop=True), dataset.items, dataset.kg
    )

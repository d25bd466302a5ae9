"""Data drift between a new snapshot and the previous run's, and the retraining trigger it feeds.

Four figures, each linear in the interactions (hash joins, no per-user loops):

- ``drift_new_user_share``: share of the new snapshot's interactions by users with no interaction in the previous one;
- ``drift_new_item_share``: share of the new snapshot's interactions on items with no interaction in the previous one;
- ``drift_volume_ratio``: new interaction count / previous interaction count (``drift_added_interactions``: rows
  not in the previous snapshot, by user, item and timestamp);
- ``drift_rating_tv``: total variation distance (0-1) between the rating distribution of the interactions added
  since the previous snapshot (rows not in it, by user, item and timestamp) and the previous snapshot's; 0 when
  nothing was added. Distinct rating values are the bins (up to `MAX_RATING_VALUES`), else equal-width bins.

The trigger (`decide`) fires when the largest of the two shares and the rating distance passes
``monitor.drift_threshold`` (the rating distance only over ``monitor.min_added`` added interactions or more).
The previous snapshot is ``extract.previous_snapshot`` where set, else the latest extract of another run in the
same ``runs/`` folder with the same source and user sample; none is a "first run" (no figures, never a trigger).
`check_source` is the drift-check DAG's whole task.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_tasks.artifacts import read_json
from recsys_tasks.config import ExtractConfig, MonitorConfig

log = logging.getLogger(__name__)

COLUMNS = ("user_id", "item_id", "rating", "timestamp")
TRIGGER_KEYS = ("drift_new_user_share", "drift_new_item_share", "drift_rating_tv")  # all in [0, 1]
MAX_RATING_VALUES = 20  # past this many distinct ratings (a continuous scale) they are binned
RATING_BINS = 10


class DriftInputError(ValueError):
    """Interactions that drift cannot be measured on (a missing column); the message names it and the table."""


@dataclass(frozen=True)
class Drift:
    """The drift of a snapshot against ``previous`` (None: a first run, no figures)."""

    previous: str | None
    metrics: Mapping[str, float]

    @property
    def first_run(self) -> bool:
        return self.previous is None

    def report(self) -> dict[str, Any]:
        """What the extract report (``report.json``) holds: the figures, or why there are none."""
        if self.first_run:
            return {"status": "first run", "previous_snapshot": None}
        return {"status": "measured", "previous_snapshot": self.previous, **self.metrics}


def measure(current: pd.DataFrame, previous: pd.DataFrame) -> dict[str, float]:
    """The drift figures of ``current`` against ``previous`` interactions (module docstring)."""
    _check_columns(current, "current interactions")
    _check_columns(previous, "previous interactions")
    if len(previous) == 0:
        raise DriftInputError("previous interactions: no rows to compare with")
    n = len(current)
    new_users = ~current["user_id"].isin(pd.unique(previous["user_id"]))
    new_items = ~current["item_id"].isin(pd.unique(previous["item_id"]))
    added = ~_row_keys(current).isin(_row_keys(previous)).to_numpy()
    return {
        "drift_new_user_share": float(new_users.mean()) if n else 0.0,
        "drift_new_item_share": float(new_items.mean()) if n else 0.0,
        "drift_volume_ratio": n / len(previous),
        "drift_rating_tv": rating_tv(current["rating"].to_numpy()[added], previous["rating"].to_numpy())
        if added.any()
        else 0.0,
        "drift_added_interactions": float(added.sum()),
    }


def rating_tv(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation distance, ½·Σ|p - q|, between two samples of ratings (both non-empty)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    values = np.unique(np.concatenate([a, b]))
    if len(values) <= MAX_RATING_VALUES:
        p = np.bincount(np.searchsorted(values, a), minlength=len(values)) / len(a)
        q = np.bincount(np.searchsorted(values, b), minlength=len(values)) / len(b)
    else:
        edges = np.linspace(values[0], values[-1], RATING_BINS + 1)
        p = np.histogram(a, edges)[0] / len(a)
        q = np.histogram(b, edges)[0] / len(b)
    return float(0.5 * np.abs(p - q).sum())


def decide(metrics: Mapping[str, float], threshold: float, min_added: int = 0) -> tuple[bool, str]:
    """Whether to retrain: the largest of `TRIGGER_KEYS` passes ``threshold`` (no figures: a first run, never);
    the rating distance counts only over at least ``min_added`` added interactions (fewer: noise)."""
    present = {k: float(metrics[k]) for k in TRIGGER_KEYS if k in metrics}
    if not present:
        return False, "first run: no previous snapshot to compare with"
    if metrics.get("drift_added_interactions", 0) < min_added:
        present.pop("drift_rating_tv", None)
    key = max(present, key=lambda k: present[k])
    if present[key] > threshold:
        return True, f"{key} {present[key]:.4f} passes the threshold {threshold:g}"
    return False, f"largest drift {key} {present[key]:.4f} is within the threshold {threshold:g}"


# ---------------------------------------------------------------- snapshots
def previous_snapshot(
    out_dir: str | Path, source: str, sample_users: int, explicit: str | Path | None = None
) -> Path | None:
    """The snapshot ``out_dir``'s is compared with: ``explicit`` (``extract.previous_snapshot``), else the
    latest other extract of ``<root>/runs/*/extract`` with the same source and sample (None: a first run).
    Only an ``out_dir`` laid out as ``<root>/runs/<run id>/extract`` has siblings."""
    if explicit:
        return Path(explicit)
    out = Path(out_dir).resolve()
    if out.name != "extract" or out.parent.parent.name != "runs":
        return None
    return latest_snapshot(out.parent.parent, source, sample_users, exclude=out)


def latest_snapshot(runs: Path, source: str, sample_users: int, exclude: Path | None = None) -> Path | None:
    """The extract folder under ``runs/*/extract`` of ``source`` and ``sample_users`` written last (by its report)."""
    found = []
    for report in runs.glob("*/extract/report.json"):
        folder = report.parent.resolve()
        if folder == exclude or not (folder / "interactions.parquet").exists():
            continue
        try:
            meta = read_json(report)
        except (OSError, ValueError):  # a report being written or damaged is no baseline
            continue
        if meta.get("source") == source and int(meta.get("sample_users") or 0) == int(sample_users):
            found.append((report.stat().st_mtime_ns, str(folder)))
    return Path(max(found)[1]) if found else None


def read_interactions(snapshot: str | Path) -> pd.DataFrame:
    """A snapshot's interactions, only the columns drift reads; a missing file or column is named."""
    path = Path(snapshot) / "interactions.parquet"
    if not path.exists():
        raise DriftInputError(f"previous snapshot {snapshot}: no interactions.parquet")
    import pyarrow.parquet as pq

    missing = [c for c in COLUMNS if c not in pq.read_schema(path).names]
    if missing:
        raise DriftInputError(f"{path}: missing column(s) {missing}")
    return pd.read_parquet(path, columns=list(COLUMNS))


def snapshot_drift(interactions: pd.DataFrame, out_dir: str | Path, cfg: ExtractConfig, source: str) -> Drift:
    """Extract's hook: the drift of the snapshot being written to ``out_dir`` against the previous one."""
    previous = previous_snapshot(out_dir, source, cfg.sample_users, cfg.previous_snapshot or None)
    if previous is None:
        log.info("drift: first run (no earlier snapshot of %s)", source)
        return Drift(None, {})
    metrics = measure(interactions, read_interactions(previous))
    log.info("drift against %s: %s", previous, metrics)
    return Drift(str(previous), metrics)


def check_source(extract_cfg: ExtractConfig, monitor: MonitorConfig, runs: Path) -> dict[str, Any]:
    """The drift-check DAG's task: read and validate the source now (as extract would, nothing written), measure
    its drift against the latest snapshot under ``runs`` and decide; a JSON-able summary with ``retrain``."""
    from recsys_tasks.data.extract import sample_users
    from recsys_tasks.data.sources import load_source
    from recsys_tasks.data.sql import is_sql_source
    from recsys_tasks.data.validate import validate

    # the latest snapshot of this source; its label is known only once the source is read, so read first
    incremental = extract_cfg.previous_snapshot or None
    raw = load_source(extract_cfg.source, incremental, chunk_rows=extract_cfg.sql_chunk_rows)
    label = raw.source
    baseline = Path(incremental) if incremental else latest_snapshot(runs, label, extract_cfg.sample_users)
    if baseline is not None and incremental is None and is_sql_source(extract_cfg.source):
        raw.close()  # a database: read only what is newer than the baseline, as an incremental extract would
        raw = load_source(extract_cfg.source, baseline, chunk_rows=extract_cfg.sql_chunk_rows)
    with tempfile.TemporaryDirectory(prefix="recsys-drift-") as spill:
        dataset, _ = validate(raw, replace(extract_cfg, previous_snapshot=""), Path(spill) / "interactions.parquet")
        if extract_cfg.sample_users:
            dataset = sample_users(dataset, extract_cfg.sample_users, extract_cfg.seed)
        inter = dataset.interactions
        metrics = measure(inter, read_interactions(baseline)) if baseline is not None else {}
    retrain, reason = decide(metrics, monitor.drift_threshold, monitor.min_added)
    summary = {
        "source": label,
        "previous_snapshot": str(baseline) if baseline is not None else None,
        "n_interactions": len(inter),
        **metrics,
        "threshold": monitor.drift_threshold,
        "retrain": retrain,
        "reason": reason,
    }
    log.info("drift check: %s", summary)
    return summary


def _check_columns(frame: pd.DataFrame, what: str) -> None:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DriftInputError(f"{what}: missing column(s) {missing}; drift needs {list(COLUMNS)}")


def _row_keys(frame: pd.DataFrame) -> pd.Series:
    """One 64-bit hash per (user, item, timestamp): which rows two snapshots share, by a hash join."""
    keys = frame[["user_id", "item_id", "timestamp"]].astype({"user_id": str, "item_id": str, "timestamp": "int64"})
    return pd.Series(pd.util.hash_pandas_object(keys, index=False).to_numpy())

"""What of a bundle's personal data reaches MLflow: the registered copy keeps only what serving reads.

`strip_bundle` rewrites the copy of the bundle that `register` logs (never finetune's own bundle):

- ``users.parquet``: ``zip_code`` emptied (nothing in the model reads it) and ``age`` replaced by its
  band's MovieLens-1M code (1, 18, 25, 35, 45, 50, 56): every reader of a profile takes the band
  (`data.dataset.age_band`), so scores and reasons are unchanged;
- ``histories.parquet`` and ``history_index/timestamps.npy``: each rating's time replaced by its place in
  its user's history (0, 1, ...): serving only orders a history by it;
- ``fusion.json``: the users left out of the fusion prior as `pseudonym`\\ s (the saved ``prior.npz`` is
  what serving reads; the list only documents the tuning).

User ids stay in ``users.parquet``, ``histories.parquet`` and ``history_index/users.npy``: a request (the
API's, the batch-scoring DAG's) names a known user by them. docs/security.md ("Privacy") says why.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_tasks.artifacts import read_json, write_json
from recsys_tasks.data.dataset import age_band

log = logging.getLogger(__name__)

KEY_ENV = "RECSYS_PSEUDONYM_KEY"  # the HMAC key of `pseudonym`; unset: a random key per process, never stored
AGE_CODES = {"under 18": 1, "18-24": 18, "25-34": 25, "35-44": 35, "45-49": 45, "50-55": 50, "56+": 56}
_PROCESS_KEY = secrets.token_bytes(32)


def pseudonym(value: str) -> str:
    """The first 16 hex digits of HMAC-SHA256(key, value): the same value gives the same pseudonym under
    one key (``RECSYS_PSEUDONYM_KEY``; unset, a random key of this process that nobody can recover)."""
    key = os.environ.get(KEY_ENV, "").encode() or _PROCESS_KEY
    return hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()[:16]


def age_code(age: object) -> int | None:
    """The MovieLens-1M code of an age's band (None for an unknown age): ``age_band`` of it is the age's band."""
    band = age_band(None if age is None or age is pd.NA else age)  # type: ignore[arg-type]
    return AGE_CODES.get(band)


def strip_bundle(directory: Path) -> Path:
    """Rewrite the bundle copy in ``directory`` as the module says; the same directory."""
    users_path = directory / "users.parquet"
    users = pd.read_parquet(users_path)
    if "zip_code" in users:
        users["zip_code"] = pd.Series([""] * len(users), dtype=users["zip_code"].dtype, index=users.index)
    if "age" in users:
        users["age"] = pd.array([age_code(a) for a in users["age"]], dtype=users["age"].dtype)
    users.to_parquet(users_path, index=False)
    _order_times(directory)
    fusion_path = directory / "fusion.json"
    if fusion_path.exists():
        fusion = read_json(fusion_path)
        if (directory / "prior.npz").exists():  # serving reads the saved prior, never the list
            fusion["excluded_users"] = sorted(pseudonym(u) for u in fusion.get("excluded_users", []))
            write_json(fusion_path, fusion)
        else:  # an old bundle: its prior is recounted from the list at load, so the list must stay
            log.warning("bundle without prior.npz: fusion.json keeps its excluded user ids")
    return directory


def _order_times(directory: Path) -> None:
    """Each history's timestamps as 0, 1, ... in the order serving reads them (time, then item id)."""
    path = directory / "histories.parquet"
    histories = pd.read_parquet(path)
    order = histories.assign(_user=histories["user_id"].astype(str), _item=histories["item_id"].astype(str))
    order = order.sort_values(["_user", "timestamp", "_item"], kind="stable")
    ranks = order.groupby("_user", sort=False).cumcount()
    histories["timestamp"] = ranks.reindex(histories.index).astype(histories["timestamp"].dtype)
    histories.to_parquet(path, index=False)
    index = directory / "history_index"
    if (index / "timestamps.npy").exists():  # sorted by (user, time, item): each user's slice gets 0..n-1
        offsets = np.load(index / "offsets.npy")
        times = np.load(index / "timestamps.npy")
        starts = np.repeat(offsets[:-1], np.diff(offsets))
        np.save(index / "timestamps.npy", (np.arange(len(times)) - starts).astype(times.dtype), allow_pickle=False)

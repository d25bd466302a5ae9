"""The champion's live quality: NDCG@k on the interactions that arrived after its training snapshot.

From the new snapshot: the interactions newer than ``cutoff`` (the champion's snapshot's newest timestamp)
whose rating is a positive and whose item the champion ranks are each user's targets; a seeded sample of at
most ``monitor.live_users`` such users is asked for its top k, as serving would ask: a user the champion knows
by id (its own profile and training history), a new user by the snapshot's profile and the history before
``cutoff``. Seen items are left out by the recommender; the gain is binary (`protocol.metrics`' NDCG).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_tasks.config import MonitorConfig
from recsys_tasks.limits import MAX_HISTORY


@dataclass(frozen=True)
class LiveSample:
    """The requests to score and, per request id, the items that count as hits."""

    requests: list[dict[str, Any]]
    positives: dict[str, frozenset[str]]
    newer_interactions: int  # all interactions after the cutoff, before any filter


def live_sample(
    snapshot: str | Path,
    cutoff: int,
    monitor: MonitorConfig,
    positive_threshold: float,
    catalogue: Collection[str],
    known_users: Collection[str],
) -> LiveSample | str:
    """The requests of the sample (module docstring), or why there are none (a sentence)."""
    snapshot = Path(snapshot)
    inter = pd.read_parquet(snapshot / "interactions.parquet", columns=["user_id", "item_id", "rating", "timestamp"])
    newer = inter["timestamp"].to_numpy() > cutoff
    if not newer.any():
        return f"no interactions newer than the champion's snapshot (its newest: {cutoff})"
    in_catalogue = inter["item_id"].isin(list(catalogue)).to_numpy()
    hits = inter[newer & in_catalogue & (inter["rating"].to_numpy() >= positive_threshold)]
    if hits.empty:
        return f"{int(newer.sum()):,} newer interactions, none a positive on an item the champion ranks"
    users = np.sort(hits["user_id"].unique())
    chosen = np.random.default_rng(monitor.seed).permutation(users)[: monitor.live_users]
    keep = set(chosen.tolist())
    hits = hits[hits["user_id"].isin(keep)]
    before = inter[~newer & in_catalogue & inter["user_id"].isin(keep).to_numpy()].sort_values(["timestamp", "item_id"])
    histories = {u: g.tail(MAX_HISTORY) for u, g in before.groupby("user_id", sort=False)}
    profiles = _profiles(snapshot, keep - set(known_users))
    wanted = {u: frozenset(g["item_id"].tolist()) for u, g in hits.groupby("user_id")}
    requests: list[dict[str, Any]] = []
    positives: dict[str, frozenset] = {}
    for user in sorted(keep):
        request: dict[str, Any] = {"request_id": f"live-{len(requests)}", "user_id": user, "k": monitor.live_k}
        positives[request["request_id"]] = wanted[user]
        if user not in known_users:  # a new user: what serving would be told about them at the cutoff
            history = histories.get(user)
            request["history"] = (
                []
                if history is None
                else [
                    {"item_id": i, "rating": float(r), "timestamp": int(t)}
                    for i, r, t in zip(history["item_id"], history["rating"], history["timestamp"])
                ]
            )
            if profiles.get(user):
                request["profile"] = profiles[user]
        requests.append(request)
    return LiveSample(requests, positives, int(newer.sum()))


def ndcg(responses: Sequence[Mapping[str, Any]], positives: Mapping[str, Collection[str]], k: int) -> float:
    """Mean binary-gain NDCG@k of the responses (each ``{"request_id", "items": [{"item_id"}, ...]}``)."""
    values = []
    for response in responses:
        wanted = positives[response["request_id"]]
        ranked = [item["item_id"] for item in response["items"][:k]]
        dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked) if item in wanted)
        ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(wanted), k)))
        values.append(dcg / ideal)
    return float(np.mean(values)) if values else float("nan")


def _profiles(snapshot: Path, users: set[str]) -> dict[str, dict[str, Any]]:
    """The request profile (age, gender, occupation) of each of ``users`` in the snapshot's users table."""
    if not users:
        return {}
    table = pd.read_parquet(snapshot / "users.parquet")
    table = table[table["user_id"].isin(users)]
    out = {}
    for row in table.to_dict("records"):
        profile = {key: row[key] for key in ("gender", "occupation") if isinstance(row.get(key), str) and row[key]}
        if row.get("age") is not None and not pd.isna(row["age"]):
            profile["age"] = int(row["age"])
        out[str(row["user_id"])] = profile
    return out

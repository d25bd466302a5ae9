"""Demographic popularity: positives per item among the training users of a demographic group.

One implementation for the three places that rank by it: the demographic-popularity baseline and
the fusion's prior (`counts_for`: the profile's finest group with at least `MIN_GROUP` training
users, backing off along `BACKOFF`), and the reasons' "popular with female students"
(`most_liked`: each large enough segment's most liked items).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_tasks.config import MIN_GROUP
from recsys_tasks.data.dataset import age_band
from recsys_tasks.explain.reasons import segment_key
from recsys_tasks.protocol.queries import Query

__all__ = ["BACKOFF", "MIN_GROUP", "DemographicPopularity"]

ATTRIBUTES = ("gender", "age", "occupation")  # age: the MovieLens band (`age_band`)
BACKOFF = (("gender", "age", "occupation"), ("gender", "age"), ("gender",), ())  # `counts_for`, finest first
UNKNOWN = frozenset({"", "unknown"})  # values that name no segment (`most_liked`)


class DemographicPopularity:
    """Positive counts among training users of the same (gender, age band, occupation) (a `Scorer`).

    `counts_for` backs off to (gender, age band), then (gender), then everyone when the group has
    fewer than ``min_group`` training users, so a rare profile is not ranked from a handful of
    people; a missing value ("") is a value of its own there. Training users absent from ``users``
    have "" for every attribute.
    """

    name = "demographic_popularity"

    def __init__(
        self,
        item_ids: Sequence[str],
        train: pd.DataFrame,
        users: pd.DataFrame,
        positive_threshold: float = 4.0,
        min_group: int = MIN_GROUP,
    ) -> None:
        if min_group < 0:
            raise ValueError(f"min_group must be 0 or more, got {min_group}")
        self.item_ids = [str(i) for i in item_ids]
        index = {item: row for row, item in enumerate(self.item_ids)}
        if len(index) != len(self.item_ids):
            raise ValueError("item_ids holds duplicates")
        self.n_items, self.min_group = len(index), int(min_group)
        user_ids, user_of_row = np.unique(train["user_id"].astype(str).to_numpy(), return_inverse=True)
        self.n_users = len(user_ids)
        self._values = _attributes(users, user_ids)  # attribute -> (n_users,) str values
        rows = train["item_id"].astype(str).map(index)
        positive = (train["rating"] >= positive_threshold).to_numpy() & rows.notna().to_numpy()
        self._user_of_positive = user_of_row[positive]  # (n_positives,) training user codes
        self._item_of_positive = rows[positive].to_numpy(dtype=np.int64)  # (n_positives,) item rows
        self._groups: dict[tuple[str, ...], tuple[dict[tuple[str, ...], int], np.ndarray, sp.csr_matrix]] = {}

    def groups(self, level: Sequence[str]) -> tuple[dict[tuple[str, ...], int], np.ndarray, sp.csr_matrix]:
        """The groups of the attributes ``level`` (in `ATTRIBUTES` order): {values: group}, training
        users per group (n_groups,), positives (n_groups, n_items) sparse, computed once."""
        level = tuple(level)
        found = self._groups.get(level)
        if found is None:
            if any(a not in ATTRIBUTES for a in level):
                raise ValueError(f"unknown demographic attribute(s) in {level}; known: {ATTRIBUTES}")
            codes, names = [], []
            for attribute in level:
                c, n = pd.factorize(self._values[attribute])
                codes.append(c)
                names.append(n)
            shape = tuple(len(n) for n in names)
            if not level:  # everyone: one group, even without training users
                present, user_group = np.zeros(1, np.int64), np.zeros(self.n_users, np.int64)
            else:  # the groups that have training users: (n_groups,) codes, each user's group (n_users,)
                combined = np.ravel_multi_index(codes, shape) if self.n_users else np.zeros(0, np.int64)
                present, user_group = np.unique(combined, return_inverse=True)
            keys = {
                tuple(str(names[a][i]) for a, i in enumerate(np.unravel_index(int(g), shape))) if level else (): n
                for n, g in enumerate(present.tolist())
            }
            sizes = np.bincount(user_group, minlength=len(present))
            counts = sp.csr_matrix(
                (np.ones(len(self._item_of_positive)), (user_group[self._user_of_positive], self._item_of_positive)),
                shape=(len(present), self.n_items),
            )
            counts.sum_duplicates()
            found = self._groups[level] = (keys, sizes, counts)
        return found

    def counts_for(self, profile: Mapping[str, Any]) -> np.ndarray:
        """(n_items,) float64 positive counts of the finest `BACKOFF` group with at least ``min_group``
        training users that this profile belongs to (everyone's as the last resort)."""
        full = (str(profile.get("gender") or ""), age_band(profile.get("age")), str(profile.get("occupation") or ""))
        for level in BACKOFF:
            keys, sizes, counts = self.groups(level)
            group = keys.get(full[: len(level)])
            if group is not None and (sizes[group] >= self.min_group or not level):
                return counts[group].toarray().ravel()
        return np.zeros(self.n_items)  # unreachable: the last level is everyone

    def score(self, queries: Sequence[Query]) -> np.ndarray:
        """(n_queries, n_items) float32: `counts_for` each query's profile."""
        out = np.zeros((len(queries), self.n_items), dtype=np.float32)
        for row, query in enumerate(queries):
            out[row] = self.counts_for(query.profile)
        return out

    def most_liked(self, levels: Sequence[Sequence[str]], top_n: int) -> dict[tuple[str, ...], list[str]]:
        """{`segment_key`: the ``top_n`` item ids most liked in it, most first, then by id} for each
        segment of ``levels`` whose values are all known and that has at least ``min_group``
        training users; the key ``()`` holds every liked item, overall."""
        id_rank = np.empty(self.n_items, np.int64)  # ties are broken by item id
        id_rank[np.argsort(np.array(self.item_ids, dtype=object), kind="stable")] = np.arange(self.n_items)

        def ranked(counts: sp.csr_matrix, group: int, n: int | None) -> list[str]:
            start, end = counts.indptr[group], counts.indptr[group + 1]
            items, liked = counts.indices[start:end], counts.data[start:end]
            order = np.lexsort((id_rank[items], -liked))[:n]
            return [self.item_ids[i] for i in items[order].tolist()]

        out: dict[tuple[str, ...], list[str]] = {(): ranked(self.groups(())[2], 0, None)}
        for level in levels:
            keys, sizes, counts = self.groups(level)
            for values, group in keys.items():
                if sizes[group] >= self.min_group and not UNKNOWN.intersection(values):
                    out[segment_key(dict(zip(level, values)))] = ranked(counts, group, top_n)
        return out


def _attributes(users: pd.DataFrame, user_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Gender, age band and occupation (str) of each of ``user_ids`` ("" where unknown or absent)."""
    users = users.drop_duplicates("user_id")
    frame = pd.DataFrame(
        {
            "user_id": users["user_id"].astype(str),
            "gender": users["gender"].fillna("").astype(str) if "gender" in users else "",
            "age": [age_band(a) for a in users["age"]] if "age" in users else "unknown",
            "occupation": users["occupation"].fillna("").astype(str) if "occupation" in users else "",
        }
    )
    found = pd.DataFrame({"user_id": user_ids}).merge(frame, on="user_id", how="left").fillna("")
    return {a: found[a].astype(str).to_numpy() for a in ATTRIBUTES}

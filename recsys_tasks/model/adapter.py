"""Request adaptation: request dicts (`model.requests`' schema) into `Query`s and catalog rows.

A known ``user_id`` brings its profile and training history; a request's own profile or history
replaces them. The model pools the latest ``max_history`` history items (`history_rows`); a known
user's own history is looked up once (`rows_of`) and its fusion row remembered (`fusion_keys`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from recsys_tasks.data.dataset import age_band
from recsys_tasks.model.candidates import UnknownIdError, item_rows
from recsys_tasks.protocol.queries import Query, profile_of
from recsys_tasks.text.texts import profile_text

__all__ = ["RequestAdapter"]


class RequestAdapter:
    """Known users' profiles and histories, and the catalog's rows (``item_row``, shared with the
    recommender: items it adds are seen here at once)."""

    def __init__(self, users: pd.DataFrame, histories: pd.DataFrame, item_row: Mapping[str, int], max_history: int):
        self.item_row = item_row
        self.max_history = int(max_history)
        self.users = {r["user_id"]: r for r in users.to_dict("records")}
        self.histories = {
            u: tuple(zip(g["item_id"], g["rating"], g["timestamp"]))
            for u, g in histories.sort_values(["timestamp", "item_id"]).groupby("user_id")
        }
        self._known_rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # `rows_of` known users

    def query_for(self, request: Mapping) -> Query:
        """A `Query` from a validated request: a known user_id brings its profile and history."""
        user_id = str(request.get("user_id") or "")
        known = self.users.get(user_id)
        profile = request.get("profile") or (profile_of(known) if known else {})
        if "history" in request and request["history"] is not None:
            history = tuple(
                (str(h["item_id"]), float(h.get("rating") or 0.0), int(h.get("timestamp") or 0))
                for h in request["history"]
            )
            unknown = [h[0] for h in history if h[0] not in self.item_row]
            if unknown:
                raise UnknownIdError("history", unknown)
        else:
            history = self.histories.get(user_id, ())
        return Query(user_id, profile_of(profile), history, request.get("text") or None)

    def sentences_of(self, request: Mapping) -> list[str]:
        """The sentences a request brings: its stated taste, and the profile it states."""
        texts = [request["text"]] if request.get("text") else []
        if request.get("profile"):
            texts.append(profile_text(profile_of(request["profile"])))
        return texts

    def is_own_history(self, query: Query) -> bool:
        """Whether ``query`` carries a known user's own training history (the same tuple)."""
        return bool(query.history) and self.histories.get(query.user_id) is query.history

    def history_rows(self, query: Query) -> tuple[np.ndarray, np.ndarray]:
        """The catalog rows of the history the model pools (the latest ``max_history``), and their ratings."""
        rows, ratings = [], []
        for item, rating, _ in reversed(query.history):  # from the latest: a known user's history may be long
            row = self.item_row.get(item)
            if row is not None:
                rows.append(row)
                ratings.append(rating)
                if len(rows) == self.max_history:
                    break
        return np.array(rows[::-1], np.int64), np.array(ratings[::-1], np.float64)

    def item_rows(self, items: Sequence[str]) -> np.ndarray:
        """The catalog rows of ``items`` the catalog holds."""
        return item_rows(self.item_row, items)

    def rows_of(self, query: Query) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(`history_rows`, the rows of every history item in the catalog) of a query; for a known
        user's own history, computed once (until items are added: they may name more of it)."""
        if self.is_own_history(query):
            found = self._known_rows.get(query.user_id)
            if found is None:
                rows, ratings = self.history_rows(query)
                found = (rows, ratings, self.item_rows(query.history_items))
                _read_only(*found)
                self._known_rows[query.user_id] = found
            return found
        return (*self.history_rows(query), self.item_rows(query.history_items))

    def items_added(self) -> None:
        """Forget the known users' rows: added items may name more of their histories."""
        self._known_rows.clear()

    def fusion_keys(self, queries: Sequence[Query]) -> list:
        """Per query, a key for the fusion's row where it is a known user's own history (the same
        row every time: remembered), else None."""
        return [
            (q.user_id, q.profile.get("gender"), age_band(q.profile.get("age")), q.profile.get("occupation"))
            if self.is_own_history(q)
            else None
            for q in queries
        ]


def _read_only(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.flags.writeable = False

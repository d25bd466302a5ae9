"""Which catalog rows a request may be answered with, and the best of them.

The candidates (default: the whole catalog) less the history and ``exclude``; ids the catalog
does not hold are refused (`UnknownIdError`), never silently dropped from ``candidates``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["UnknownIdError", "allowed", "candidate_rows", "item_rows", "top"]


class UnknownIdError(KeyError):
    """A request names ids the catalog does not hold."""

    def __init__(self, field: str, ids: Sequence[str]):
        self.field, self.ids = field, list(ids)
        super().__init__(f"{field}: unknown item id(s) {self.ids[:10]}{' ...' if len(self.ids) > 10 else ''}")

    def __str__(self) -> str:
        return self.args[0]


def item_rows(item_row: Mapping[str, int], items: Sequence[str]) -> np.ndarray:
    """The catalog rows of ``items`` the catalog holds, in order (unknown ones left out)."""
    return np.array([item_row[i] for i in items if i in item_row], np.int64)


def candidate_rows(item_row: Mapping[str, int], candidates: Sequence[str]) -> list[int]:
    """The catalog rows of a request's ``candidates``; `UnknownIdError` if the catalog lacks any."""
    unknown = [c for c in candidates if c not in item_row]
    if unknown:
        raise UnknownIdError("candidates", unknown)
    return [item_row[c] for c in candidates]


def allowed(n_items: int, item_row: Mapping[str, int], request: Mapping, seen: np.ndarray) -> np.ndarray:
    """(n_items,) bool: the rows that may be recommended: the candidates (default all) less the
    history's rows ``seen`` and the request's ``exclude``."""
    if request.get("candidates") is not None:
        mask = np.zeros(n_items, bool)
        mask[candidate_rows(item_row, request["candidates"])] = True
    else:
        mask = np.ones(n_items, bool)
    mask[seen] = False
    if request.get("exclude"):
        mask[item_rows(item_row, request["exclude"])] = False
    return mask


def top(scores: np.ndarray, idx: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` best of the rows ``idx`` (ascending), best first, ties in row order: what a stable
    argsort gives, in O(len(idx)) (a partition first) rather than O(len log len) on big catalogs."""
    s = scores[idx]
    if n < len(idx):
        kth = np.partition(s, len(s) - n)[len(s) - n]  # the n-th largest score
        keep = np.flatnonzero(s >= kth)  # every tie of it too, so the cut below is the stable one
        idx, s = idx[keep], s[keep]
    return idx[np.lexsort((idx, -s))[:n]]

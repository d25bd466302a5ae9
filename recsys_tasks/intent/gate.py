"""An `Intent` over the catalogue: which rows fit it (hard constraints), and in what order of relaxation.

Each row gets a *tier*: 0 where it fits every constraint, k where it fits once the first k relaxations
are made, `NEVER` where it has a genre the request excludes (never relaxed). The relaxations, weakest
constraint first: the years, then the genres beyond the first named, then the genres. Ranking by
(tier, score) puts every fitting item first and, where fewer than k fit, fills the rest from the
least relaxed tier; `relaxed` says, in words, what the returned items needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys_tasks.explain.genres import genre_set
from recsys_tasks.intent.parse import Intent

__all__ = ["NEVER", "CatalogFacts", "Tiers", "rank_scores", "tiers"]

NEVER = 127  # the tier of a row the request excludes


class CatalogFacts:
    """Per catalogue row its genres (a boolean column per genre) and its release year (NaN unknown)."""

    def __init__(self, genres: Sequence[Any], years: Sequence[Any]):
        sets = [genre_set(g) for g in genres]
        self.vocabulary = sorted({g for s in sets for g in s})
        column = {g: i for i, g in enumerate(self.vocabulary)}
        self.member = np.zeros((len(sets), len(self.vocabulary)), bool)
        for row, s in enumerate(sets):
            self.member[row, [column[g] for g in s]] = True
        self._column = column
        self.years = pd.to_numeric(pd.Series(list(years), dtype=object), errors="coerce").to_numpy(np.float64)
        self.latest = int(np.nanmax(self.years)) if np.isfinite(self.years).any() else None

    def __len__(self) -> int:
        return len(self.member)

    def having(self, group: Sequence[str]) -> np.ndarray:
        """(n,) bool: rows with every genre of ``group`` (none where the catalogue lacks one)."""
        if any(g not in self._column for g in group):
            return np.zeros(len(self), bool)
        return np.asarray(self.member[:, [self._column[g] for g in group]].all(1), bool)

    def any_of(self, genres: Sequence[str]) -> np.ndarray:
        """(n,) bool: rows with at least one of ``genres``."""
        cols = [self._column[g] for g in genres if g in self._column]
        return np.asarray(self.member[:, cols].any(1), bool) if cols else np.zeros(len(self), bool)

    def within(self, years: tuple[int | None, int | None]) -> np.ndarray:
        """(n,) bool: rows released within ``years`` (first, last; None open); unknown years never are."""
        first, last = years
        ok = np.isfinite(self.years)
        if first is not None:
            ok &= self.years >= first
        if last is not None:
            ok &= self.years <= last
        return ok


@dataclass
class Tiers:
    """Per row its tier (`NEVER`: excluded); ``steps[k - 1]``: what tier k relaxes, in words."""

    tier: np.ndarray
    steps: list[str]

    def relaxed(self, chosen: np.ndarray, allowed: np.ndarray | None = None) -> list[str]:
        """The relaxations the ``chosen`` rows needed, each with how many ``allowed`` rows (default all)
        fitted before it: "years 1930-1939 relaxed: 3 item(s) fit"."""
        worst = int(self.tier[chosen].max()) if len(chosen) else 0
        tier = self.tier if allowed is None else self.tier[allowed]
        return [
            f"{self.steps[k - 1]} relaxed: {int((tier < k).sum())} item(s) fit"
            for k in range(1, min(worst, len(self.steps)) + 1)
        ]


def _years_words(years: tuple[int | None, int | None]) -> str:
    first, last = years
    if first is None:
        return f"years up to {last}"
    if last is None:
        return f"years from {first}"
    return f"years {first}-{last}" if first != last else f"year {first}"


def tiers(intent: Intent, facts: CatalogFacts, hard_genres: bool = True) -> Tiers:
    """The tier of every row for ``intent`` (see the module); ``hard_genres=False``: the genres it
    names gate nothing (they are left to the fusion's taste term), only exclusions and years do."""
    n = len(facts)
    levels: list[np.ndarray] = []  # fits at each level, strictest first
    steps: list[str] = []
    genres = intent.genres if hard_genres else []
    first = [genres[0][0]] if genres else []

    def fits(with_years: bool, groups: Sequence[Sequence[str]]) -> np.ndarray:
        ok = np.ones(n, bool)
        if with_years and intent.years:
            ok &= facts.within(intent.years)
        if groups:
            ok &= np.logical_or.reduce([facts.having(g) for g in groups])
        return ok

    levels.append(fits(True, genres))
    if intent.years:
        levels.append(fits(False, genres))
        steps.append(_years_words(intent.years))
    if genres and (len(genres) > 1 or len(genres[0]) > 1):
        levels.append(fits(False, [first]))
        steps.append(f"genres beyond '{first[0]}'")
    if genres:
        levels.append(fits(False, []))
        steps.append("genres")
    tier = np.full(n, len(levels), np.int16)
    for k in range(len(levels) - 1, -1, -1):
        tier[levels[k]] = k
    tier[tier == len(levels)] = NEVER  # fits not even with every relaxation (cannot happen: the last level is all)
    if intent.exclude:
        tier[facts.any_of(intent.exclude)] = NEVER
    return Tiers(tier, steps)


def rank_scores(scores: np.ndarray, tier: np.ndarray) -> np.ndarray:
    """Scores whose order is (tier, score): each tier shifted below the one before by the scores' span;
    `NEVER` rows below every other (a dense score row, as `Recommender.score` answers)."""
    scores = np.asarray(scores, np.float32)
    finite = scores[np.isfinite(scores)]
    span = float(finite.max() - finite.min()) + 1.0 if len(finite) else 1.0
    shift = np.where(tier == NEVER, int(tier[tier != NEVER].max(initial=0)) + 1, tier).astype(np.float32)
    return (scores - shift * np.float32(span)).astype(np.float32)

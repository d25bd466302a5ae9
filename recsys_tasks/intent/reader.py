"""One catalogue's intent reader: a request's text -> `Intent` (remembered per text), -> `Tiers`, and the
soft preferences' scores (reference items, free text), as `model.recommender` applies them.

Soft terms, each a standard score over the catalogue times the query's own score spread (so they weigh
alike whatever the model's scale): a reference item's text vector's cosine with every item's
and its model vector's centred cosine, and, where the text has
words no rule read, the sentence's cosine with every item's text vector; text cosines standardised by
`explain.reasons.Explainer.taste_z`. Their weights: `SoftWeights` (docs/decisions/0019-intent-gate.md; the
reference weights fitted per model, docs/decisions/0024-fitted-reference-weights.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from recsys_tasks.intent.gate import NEVER, CatalogFacts, Tiers, rank_scores, tiers
from recsys_tasks.intent.parse import Intent, IntentParser

__all__ = ["HARD_GENRES", "IntentReader", "SoftWeights"]


@dataclass(frozen=True)
class SoftWeights:
    """The soft terms' weights, in standard deviations of the query's scores per standard score of a similarity.

    The defaults were read off the intent benchmark's dev sentences (docs/decisions/0019-intent-gate.md); finetune
    fits ``like`` and ``model_like`` on its held-out users and the bundle carries them (`fit_reference_weights`).
    """

    like: float = 2.0  # a reference item's text similarity
    model_like: float = 0.5  # its similarity in the model's item vectors
    text: float = 1.0  # the free text's similarity

    @classmethod
    def from_meta(cls, found: dict | None) -> SoftWeights:
        """The bundle's fitted weights (``meta["intent_weights"]``); the defaults where it has none."""
        return cls(**{k: float(v) for k, v in (found or {}).items() if k in cls.__dataclass_fields__})


HARD_GENRES = True  # genres a request names gate the candidates (False: only the fusion's taste term ranks them)
SOFT_TASTE = True  # ... but not those of a stated taste ("I like Sci-Fi movies."): docs/decisions/0019-intent-gate.md
_CACHE = 4096  # texts whose parse is remembered


class IntentReader:
    """Parses requests' text against the catalogue and turns the parse into tiers and soft scores."""

    def __init__(
        self,
        catalog: pd.DataFrame,
        hard_genres: bool = HARD_GENRES,
        soft_taste: bool = SOFT_TASTE,
        weights: SoftWeights | None = None,
    ):
        self.hard_genres, self.soft_taste = hard_genres, soft_taste
        self.weights = weights or SoftWeights()
        self._parsed: dict[str, Intent] = {}
        self.set_catalog(catalog)

    def set_catalog(self, catalog: pd.DataFrame) -> None:
        """After items were added or changed (`Recommender.upsert_items`)."""
        n = len(catalog)
        genres = catalog["genres"].tolist() if "genres" in catalog else [""] * n
        years = catalog["year"].tolist() if "year" in catalog else [None] * n
        self.facts = CatalogFacts(genres, years)
        titles = catalog["title"].tolist() if "title" in catalog else [""] * n
        self.parser = IntentParser(
            catalog["item_id"].astype(str).tolist(), titles, self.facts.vocabulary, self.facts.latest
        )
        self.row = {item: r for r, item in enumerate(self.parser.item_ids)}
        self._parsed.clear()

    def parse(self, text: str | None) -> Intent:
        """The `Intent` of ``text``, remembered (never change the one returned: `replace` it)."""
        key = text or ""
        found = self._parsed.get(key)
        if found is None:
            found = self.parser.parse(text)
            if len(self._parsed) >= _CACHE:
                self._parsed.pop(next(iter(self._parsed)))
            self._parsed[key] = found
        return found

    def changes_ranking(self, intent: Intent) -> bool:
        """Whether ``intent`` gates rows or adds soft terms (a stated taste alone does neither: the
        fusion's taste term ranks its genres)."""
        gating_genres = bool(intent.genres) and self.hard_genres and not (self.soft_taste and intent.taste)
        return bool(intent.exclude or intent.years or intent.like or intent.free_text or gating_genres)

    def like_rows(self, intent: Intent) -> np.ndarray:
        """The catalogue rows of the items ``intent`` names as models."""
        return np.array([self.row[r.item_id] for r in intent.like if r.item_id in self.row], np.int64)

    def tiers(self, intent: Intent) -> Tiers:
        """The rows' tiers; with ``soft_taste`` a stated taste's genres gate nothing (the fusion's term ranks them)."""
        return tiers(intent, self.facts, self.hard_genres and not (self.soft_taste and intent.taste))

    def adjust(
        self,
        intent: Intent,
        scores: np.ndarray,
        unit_vectors: Callable[[], np.ndarray],
        text_vector: Callable[[str], np.ndarray],
        text_z: Callable[[np.ndarray, np.ndarray], np.ndarray],
        item_text: np.ndarray,
    ) -> tuple[np.ndarray, Tiers]:
        """(scores ranked by (tier, score + soft terms), tiers) of one query's dense ``scores`` row.

        unit_vectors: every item's centred unit model vector; text_vector: the free text's vector (the
        recommender gives the whole sentence's, which it encodes anyway: one encoding per request);
        text_z: standard scores of items' text cosines with it (`Explainer.taste_z`); item_text: (n, text_dim).
        """
        scores = np.asarray(scores, np.float32)
        found = self.tiers(intent)
        parts = self.soft_parts(intent, scores, found.tier, unit_vectors, text_vector, text_z, item_text)
        return rank_scores(scores + self.weigh(parts, len(scores)), found.tier), found

    def weigh(self, parts: dict[str, np.ndarray], n: int) -> np.ndarray:
        """(n,) float32: `soft_parts` times their `SoftWeights`, summed (zeros without any)."""
        out = np.zeros(n, np.float32)
        for name, part in parts.items():
            out += np.float32(getattr(self.weights, name)) * part
        return out

    def soft_parts(
        self,
        intent: Intent,
        scores: np.ndarray,
        tier: np.ndarray,
        unit_vectors: Callable[[], np.ndarray],
        text_vector: Callable[[str], np.ndarray],
        text_z: Callable[[np.ndarray, np.ndarray], np.ndarray],
        item_text: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Each soft term of ``intent`` before its weight (a `SoftWeights` field name -> (n,) float32 standard
        scores times the query's score spread); none where it asks for no soft preference."""
        if not (intent.like or intent.free_text):
            return {}
        kept = scores[(tier != NEVER) & np.isfinite(scores)]
        spread = float(kept.std()) if len(kept) > 1 else 1.0
        scale = np.float32(spread if spread > 1e-6 else 1.0)
        parts: dict[str, np.ndarray] = {}
        rows = self.like_rows(intent)
        if len(rows):
            reference = item_text[rows].mean(0)
            reference = reference / max(float(np.linalg.norm(reference)), 1e-12)
            parts["like"] = scale * np.asarray(text_z(reference, item_text @ reference), np.float32)
            unit = unit_vectors()
            parts["model_like"] = scale * _standard(unit @ unit[rows].mean(0))
        if intent.free_text:
            vector = text_vector(intent.free_text)
            parts["text"] = scale * np.asarray(text_z(vector, item_text @ vector), np.float32)
        return parts

    @staticmethod
    def with_relaxed(intent: Intent, found: Tiers, chosen: np.ndarray, allowed: np.ndarray | None = None) -> Intent:
        """A copy of ``intent`` saying which relaxations the ``chosen`` rows needed."""
        return replace(intent, relaxed=found.relaxed(chosen, allowed))


def _standard(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float64)
    sd = values.std()
    return ((values - values.mean()) / (sd if sd > 1e-12 else 1.0)).astype(np.float32)

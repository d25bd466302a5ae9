"""The glue between a bundle and its reasons (`explain.reasons`): the explainer a bundle gets, and
responses in the CLI/API schema with a reason per item."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from recsys_tasks.explain.reasons import LEVELS, TOP_N, Explainer, display_title
from recsys_tasks.model.bundle import Bundle
from recsys_tasks.model.popularity import DemographicPopularity

__all__ = ["describe", "explainer_for", "response", "round6"]


def explainer_for(bundle: Bundle) -> Explainer:
    """The bundle's explainer: its KG links and its training users' demographic popularity
    (each segment's `TOP_N` most liked items, `model.popularity`)."""
    meta, threshold = bundle.meta, float(bundle.meta.get("positive_threshold", 4.0))
    items = bundle.catalog["item_id"].astype(str).tolist()
    popular = DemographicPopularity(items, bundle.histories, bundle.users, threshold).most_liked(LEVELS, TOP_N)
    return Explainer(
        bundle.catalog, bundle.item_content, bundle.item_links, popular, meta["n_id_items"], meta["text_dim"], threshold
    )


def response(
    request: Mapping,
    item_ids: Sequence[str],
    top: np.ndarray,
    scores: np.ndarray,
    reasons: Sequence[str],
    model_version: str,
    catalog: pd.DataFrame | None = None,
    intent: Mapping | None = None,
) -> dict:
    """A response: the items ``top`` (catalog rows) best first, each with its score and reason, and with
    a ``catalog`` its title, year and genres; ``intent``: the parse of the request's text (`intent.parse`)."""
    rows = top.tolist()
    items = [
        {"item_id": item_ids[i], "score": s, "reason": reason} for i, s, reason in zip(rows, round6(scores), reasons)
    ]
    if catalog is not None:
        for item, described in zip(items, describe(catalog, rows)):
            item.update(described)
    out = {"request_id": request["request_id"], "items": items, "model_version": model_version}
    if intent is not None:
        out["intent"] = dict(intent)
    return out


def describe(catalog: pd.DataFrame, rows: Sequence[int]) -> list[dict]:
    """Title ("The Godfather"; None unknown), year (None unknown) and genres (as the catalog writes them) of
    catalog ``rows``."""
    if not len(rows):
        return []
    part = catalog.iloc[list(rows)]
    n = len(part)
    titles = part["title"].tolist() if "title" in part else [""] * n
    years = part["year"].tolist() if "year" in part else [None] * n
    genres = part["genres"].tolist() if "genres" in part else [""] * n
    ids = part["item_id"].astype(str).tolist()
    return [
        {
            "title": display_title(t, i) if str(t or "").strip() else None,
            "year": int(y) if y is not None and not pd.isna(y) else None,
            "genres": [g for g in str(gs or "").split("|") if g],
        }
        for t, y, gs, i in zip(titles, years, genres, ids)
    ]


def round6(scores: np.ndarray) -> list[float]:
    """``[round(float(s), 6) for s in scores]`` for float32 scores, in one vectorised pass: s·10⁶ is
    exact in float64 (a float32 has 24 significant bits, 10⁶ = 2⁶·15625 adds 14), so rounding it half
    to even is Python's correctly rounded ``round``."""
    return (np.rint(np.asarray(scores, np.float32).astype(np.float64) * 1e6) / 1e6).tolist()

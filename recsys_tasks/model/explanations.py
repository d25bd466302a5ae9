"""The glue between a bundle and its reasons (`explain.reasons`): the explainer a bundle gets, and
responses in the CLI/API schema with a reason per item."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recsys_tasks.explain.reasons import LEVELS, TOP_N, Explainer
from recsys_tasks.model.bundle import Bundle
from recsys_tasks.model.popularity import DemographicPopularity

__all__ = ["explainer_for", "response", "round6"]


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
) -> dict:
    """A response: the items ``top`` (catalog rows) best first, each with its score and reason."""
    return {
        "request_id": request["request_id"],
        "items": [
            {"item_id": item_ids[i], "score": s, "reason": reason}
            for i, s, reason in zip(top.tolist(), round6(scores), reasons)
        ],
        "model_version": model_version,
    }


def round6(scores: np.ndarray) -> list[float]:
    """``[round(float(s), 6) for s in scores]`` for float32 scores, in one vectorised pass: s·10⁶ is
    exact in float64 (a float32 has 24 significant bits, 10⁶ = 2⁶·15625 adds 14), so rounding it half
    to even is Python's correctly rounded ``round``."""
    return (np.rint(np.asarray(scores, np.float32).astype(np.float64) * 1e6) / 1e6).tolist()

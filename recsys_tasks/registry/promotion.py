"""The promotion gate: a pure decision, testable without MLflow.

The candidate becomes ``champion`` only if, on the same data, its primary score beats the
champion's by more than ``margin`` and no slice's NDCG falls by more than ``tolerance``.
Missing or NaN metrics never promote, and ties never demote.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeGuard

SLICE_SUFFIX = "/ndcg/model"


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    primary: str,
    margin: float = 0.0,
    tolerance: float = 0.02,
) -> Decision:
    """Compare metric dicts measured on the same split (keys like ``cold-user@5/ndcg/model``)."""
    value = candidate.get(primary)
    if not _finite(value):
        return Decision(False, f"candidate has no finite {primary!r} ({value!r})")
    bad = [k for k, v in candidate.items() if k.endswith(SLICE_SUFFIX) and not _finite(v)]
    if bad:
        return Decision(False, f"candidate metrics are NaN or missing: {bad}")
    if champion is None:
        return Decision(True, "no champion yet")
    incumbent = champion.get(primary)
    if not _finite(incumbent):
        return Decision(True, f"champion has no finite {primary!r}")
    if value <= incumbent + margin:
        return Decision(
            False, f"{primary} {value:.4f} does not beat the champion's {incumbent:.4f} by more than {margin:g}"
        )
    for key, old in champion.items():
        if key.endswith(SLICE_SUFFIX) and _finite(old):
            new = candidate.get(key)
            if not _finite(new):
                return Decision(False, f"candidate lacks {key!r}, which the champion has")
            if new < old - tolerance:
                return Decision(False, f"{key} falls from {old:.4f} to {new:.4f} (tolerance {tolerance:g})")
    return Decision(True, f"{primary} {value:.4f} beats the champion's {incumbent:.4f}")


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

"""The promotion gate `promotion.decide`: a pure function, so every rule is checked without MLflow.

The candidate becomes champion only if its primary score beats the champion's by more than the
margin and no slice's NDCG falls by more than the tolerance; missing or NaN metrics never
promote, and a tie never demotes the champion.
"""

from __future__ import annotations

import math

import pytest

from recsys_tasks.registry.promotion import Decision, decide

PRIMARY = "cold_mean_ndcg"
COLD_USER, COLD_ITEM = "cold-user_at_0/ndcg/model", "cold-item/ndcg/model"


def metrics(primary: float | None = 0.5, cold_user: float = 0.5, cold_item: float = 0.5) -> dict[str, float]:
    """A metric dict shaped like the logged one (primary + per-slice model NDCG + a baseline)."""
    out = {COLD_USER: cold_user, COLD_ITEM: cold_item, "cold-item/ndcg/popularity": 0.3}
    if primary is not None:
        out[PRIMARY] = primary
    return out


# ---------------------------------------------------------------- promotes
def test_no_champion_promotes() -> None:
    decision = decide(metrics(0.1), None, PRIMARY)
    assert isinstance(decision, Decision) and decision.promote
    assert "no champion" in decision.reason


def test_better_primary_promotes() -> None:
    decision = decide(metrics(0.6, 0.6, 0.6), metrics(0.5), PRIMARY)
    assert decision.promote, decision.reason


def test_champion_lacking_the_primary_is_replaced() -> None:
    assert decide(metrics(0.4), metrics(None), PRIMARY).promote


def test_champion_with_nan_primary_is_replaced() -> None:
    assert decide(metrics(0.4), metrics(math.nan), PRIMARY).promote


def test_beating_the_margin_promotes() -> None:
    assert decide(metrics(0.52, 0.52, 0.52), metrics(0.5), PRIMARY, margin=0.01).promote


def test_slice_drop_within_tolerance_promotes() -> None:
    candidate = metrics(0.6, cold_user=0.7, cold_item=0.49)  # cold-item falls by 0.01 < 0.02
    assert decide(candidate, metrics(0.5), PRIMARY, tolerance=0.02).promote


# ---------------------------------------------------------------- never promotes
def test_tie_never_demotes_the_champion() -> None:
    decision = decide(metrics(0.5), metrics(0.5), PRIMARY)
    assert not decision.promote
    assert "does not beat" in decision.reason


def test_worse_primary_is_not_promoted() -> None:
    assert not decide(metrics(0.4), metrics(0.5), PRIMARY).promote


def test_improvement_within_margin_is_not_promoted() -> None:
    decision = decide(metrics(0.505), metrics(0.5), PRIMARY, margin=0.01)
    assert not decision.promote
    assert "0.01" in decision.reason


def test_slice_falling_beyond_tolerance_blocks_a_better_primary() -> None:
    candidate = metrics(0.7, cold_user=0.9, cold_item=0.4)  # cold-item falls by 0.1 > 0.02
    decision = decide(candidate, metrics(0.5), PRIMARY, tolerance=0.02)
    assert not decision.promote
    assert COLD_ITEM in decision.reason


def test_candidate_lacking_a_slice_the_champion_has_is_not_promoted() -> None:
    candidate = metrics(0.7)
    del candidate[COLD_ITEM]
    decision = decide(candidate, metrics(0.5), PRIMARY)
    assert not decision.promote
    assert COLD_ITEM in decision.reason


@pytest.mark.parametrize("primary", [None, math.nan, math.inf, True, "0.9"], ids=repr)
@pytest.mark.parametrize("champion", [None, metrics(0.1)], ids=["no-champion", "champion"])
def test_missing_or_non_finite_primary_never_promotes(primary: object, champion: dict | None) -> None:
    candidate = metrics(None)
    if primary is not None:
        candidate[PRIMARY] = primary  # type: ignore[assignment]
    decision = decide(candidate, champion, PRIMARY)
    assert not decision.promote
    assert PRIMARY in decision.reason


@pytest.mark.parametrize("champion", [None, metrics(0.1)], ids=["no-champion", "champion"])
def test_nan_slice_metric_never_promotes(champion: dict | None) -> None:
    decision = decide(metrics(0.9, cold_user=math.nan), champion, PRIMARY)
    assert not decision.promote
    assert COLD_USER in decision.reason

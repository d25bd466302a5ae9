"""finetune's early stopping (`recsys_tasks.model.early_stopping`): what is kept and when a stage stops."""

from __future__ import annotations

import pytest

from recsys_tasks.config import ConfigError, FinetuneConfig
from recsys_tasks.model.early_stopping import EarlyStopping


def _rounds(stopping: EarlyStopping, scores: list[float]) -> tuple[int, int]:
    """(the 1-based round kept, the round training stopped after) for ``scores`` in turn."""
    kept = 0
    for number, score in enumerate(scores, 1):
        better, stop = stopping.update(score)
        kept = number if better else kept
        if stop:
            return kept, number
    return kept, len(scores)


# a curve that rises fast, then creeps up by 0.1% a round: the large-validation shape of docs/decisions/0021
CREEP = [0.20, 0.22, 0.23, 0.235] + [0.235 * 1.001**k for k in range(1, 20)]


def test_without_min_gain_every_gain_resets_patience() -> None:
    kept, stopped = _rounds(EarlyStopping(patience=3), CREEP)
    assert kept == stopped == len(CREEP)  # it never stops while the score creeps up


def test_small_gains_are_kept_but_buy_no_more_rounds() -> None:
    kept, stopped = _rounds(EarlyStopping(patience=3, min_gain=0.005), CREEP)
    # round 4 is the last to gain 0.5% over the score that reset patience (round 3); rounds 5-7 gain less
    assert stopped == 7
    assert kept == 7  # the best state is still the best seen, not the one that last reset patience


def test_a_gain_over_the_bar_resets_patience_even_after_small_gains() -> None:
    scores = [0.20, 0.2005, 0.2009, 0.2030, 0.2031, 0.2032, 0.2033]
    kept, stopped = _rounds(EarlyStopping(patience=3, min_gain=0.005), scores)
    # round 4 is 1.5% over round 1 (the bar): patience restarts there and runs out after round 7
    assert (kept, stopped) == (7, 7)
    assert _rounds(EarlyStopping(patience=3, min_gain=0.005), scores[:4] + [0.19, 0.19, 0.19]) == (4, 7)


def test_the_state_before_training_competes_and_sets_the_bar() -> None:
    stopping = EarlyStopping(patience=2, min_gain=0.01)
    stopping.start(0.30)
    assert stopping.update(0.301) == (True, False)  # better than the start, but not by 1%
    assert stopping.update(0.2) == (False, True)
    stopping = EarlyStopping(patience=2, min_gain=0.01)
    stopping.start(0.30)
    assert stopping.update(0.29) == (False, False)
    assert stopping.update(0.29) == (False, True)


def test_a_tie_is_not_a_gain() -> None:
    stopping = EarlyStopping(patience=1)
    assert stopping.update(0.3) == (True, False)
    assert stopping.update(0.3 + 5e-5) == (False, True)


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_a_min_gain_outside_zero_to_one_is_a_config_error(value: float) -> None:
    with pytest.raises(ConfigError, match="finetune.min_gain"):
        FinetuneConfig(min_gain=value)

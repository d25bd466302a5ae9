"""finetune's early stopping: when a training stage has bought enough (docs/decisions/0021-min-gain.md).

Two things are tracked apart. The best score seen decides which state is kept, so any gain, however small,
is kept. Patience counts the rounds since the score last rose by at least ``min_gain`` (a share) over the
score that last did so: on a large validation set the curve creeps up by a tenth of a percent a round for
many rounds, and each such round costs as much as the first.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EarlyStopping"]

TIE = 1e-4  # an absolute gain below this is a tie, whatever min_gain says


@dataclass
class EarlyStopping:
    patience: int
    min_gain: float = 0.0
    best: float | None = None  # the best score seen: its state is the one kept
    bar: float | None = None  # the score patience was last reset at
    waited: int = 0

    def start(self, score: float) -> None:
        """The score before the first round, where the state before training competes too."""
        self.best = self.bar = score

    def update(self, score: float) -> tuple[bool, bool]:
        """One round's score: (whether it is the best so far, whether to stop after it)."""
        better = self.best is None or score > self.best + TIE
        if better:
            self.best = score
        if self.bar is None or score > self.bar * (1 + self.min_gain) + TIE:
            self.bar, self.waited = score, 0
        else:
            self.waited += 1
        return better, self.waited >= self.patience

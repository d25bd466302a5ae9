"""Sampled softmax with the log-Q correction (Yi et al., RecSys 2019; docs/decisions/0013-sampled-softmax.md).

Per step one shared sample of ``n`` negatives is drawn with replacement from the trainable items with
probability ``q_i`` (popularity^alpha); a sampled item's logit is ``u·v_i + b_i - log(n q_i)``, the
positive's is ``u·v_pos + b_pos`` uncorrected, and a sampled item equal to the row's target is masked.
Then ``sum_j exp(s_j) / (n q_j)`` over the sample is an unbiased estimate of the partition function less
the positive, so the loss tends to the full softmax's as ``n`` grows; with every item sampled once and
``n q_i = 1`` it is the full softmax exactly.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["NegativeSampler", "sampled_softmax_loss"]


class NegativeSampler:
    """Draws negatives among ``rows`` (catalog rows of the trainable items) with q ∝ (count + 1)^alpha
    (alpha 0: uniform); ``log_expected`` of a draw is log(n · q)."""

    def __init__(self, rows: np.ndarray, counts: np.ndarray, alpha: float, seed: int):
        if len(rows) == 0:
            raise ValueError("finetune: no trainable items to draw negatives from")
        weights = (np.asarray(counts, np.float64) + 1.0) ** float(alpha)
        self.rows = np.asarray(rows, np.int64)
        self.q = weights / weights.sum()
        self._cdf = np.cumsum(self.q)
        self._cdf[-1] = 1.0
        self.rng = np.random.default_rng(seed)

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(catalog rows (n,), log(n · q) per draw (n,) float32)."""
        at = np.minimum(np.searchsorted(self._cdf, self.rng.random(n), side="right"), len(self.rows) - 1)
        return self.rows[at], np.log(n * self.q[at]).astype(np.float32)


def sampled_softmax_loss(
    users: torch.Tensor,
    positive_vecs: torch.Tensor,
    positive_bias: torch.Tensor,
    sampled_vecs: torch.Tensor,
    sampled_bias: torch.Tensor,
    log_expected: torch.Tensor,
    hits: torch.Tensor,
) -> torch.Tensor:
    """Mean cross-entropy of each row's positive against the shared sample.

    users (b, d); positive_vecs (b, d), positive_bias (b,): each row's target; sampled_vecs (n, d),
    sampled_bias (n,), log_expected (n,): the negatives and log(n q) of each; hits (b, n) bool: a draw
    equal to the row's target (masked out).
    """
    positive = (users * positive_vecs).sum(1, keepdim=True) + positive_bias.unsqueeze(1)
    sampled = (users @ sampled_vecs.T + sampled_bias - log_expected).masked_fill(hits, float("-inf"))
    logits = torch.cat([positive, sampled], 1).float()  # the loss in float32 whatever the products ran in
    return torch.nn.functional.cross_entropy(logits, torch.zeros(len(users), dtype=torch.long, device=users.device))

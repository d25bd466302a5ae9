"""The content-to-collaborative map: a new item gets the vector and bias a warm item with its text has.

A ridge regression from an item's text vector to the trained model's ``(v_i, b_i)`` of the items
with an ID row, its penalty chosen by efficient leave-one-out cross-validation on those items
(scikit-learn's `RidgeCV`). It replaces the content towers for items without an ID: their KG input
is the trained items' KG vectors, which the like edges of the graph make collaborative (a warm
item's KG vector says who liked it, a new item's cannot), so the towers learn from it what does
not transfer to new items; text does not have that skew. Measured on seed 42 (test slices, once):
cold-item NDCG@20 0.152 (towers) -> 0.181 (this map, text only) vs 0.163 (text + KG).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

__all__ = ["ALPHAS", "ContentMap"]

ALPHAS = tuple(float(a) for a in np.logspace(-2, 3, 16))
FILE = "content_map.npz"


@dataclass(frozen=True)
class ContentMap:
    """``[text, 1] @ weights`` = (vector ⊕ bias) for an item without an ID."""

    weights: np.ndarray  # (text_dim + 1, dim + 1) float32, the last row the intercept
    alpha: float
    MIN_ITEMS: ClassVar[int] = 3  # trained items a map needs (leave-one-out CV over fewer says nothing)

    @classmethod
    def fit(cls, text: np.ndarray, vectors: np.ndarray, bias: np.ndarray) -> "ContentMap":
        """From the items with an ID: their text vectors (n, t), model vectors (n, d) and biases (n,)."""
        from sklearn.linear_model import RidgeCV

        if len(text) < cls.MIN_ITEMS:
            raise ValueError(f"content map: {len(text)} trained item(s); at least {cls.MIN_ITEMS} are needed to fit it")
        target = np.hstack([vectors, bias.reshape(-1, 1)]).astype(np.float64)
        ridge = RidgeCV(alphas=ALPHAS).fit(np.asarray(text, np.float64), target)
        weights = np.vstack([ridge.coef_.T, ridge.intercept_.reshape(1, -1)]).astype(np.float32)
        return cls(weights, float(ridge.alpha_))

    def __call__(self, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (n, d), biases (n,)) for text vectors (n, t)."""
        out = np.asarray(text, np.float32) @ self.weights[:-1] + self.weights[-1]
        return out[:, :-1], out[:, -1]

    @property
    def text_dim(self) -> int:
        return self.weights.shape[0] - 1

    def save(self, directory: Path) -> None:
        np.savez(directory / FILE, weights=self.weights, alpha=np.float64(self.alpha))

    @classmethod
    def load(cls, directory: Path) -> "ContentMap | None":
        """The bundle's map, None for bundles saved before it (their towers serve new items)."""
        path = Path(directory) / FILE
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as data:
            return cls(data["weights"].astype(np.float32), float(data["alpha"]))

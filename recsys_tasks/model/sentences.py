"""Vectors of sentences (profile sentences, stated tastes) for the user tower.

The bundle holds the sentences training saw; one never seen is encoded on first use with the
bundle's text model and remembered, or, where the API has set a bounded shared cache
(`external`), looked up there instead of being remembered for ever.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported on first use: it brings torch and transformers
    from recsys_tasks.text.encoder import TextEncoder

__all__ = ["Sentences"]


class Sentences:
    """The bundle's sentences and their vectors, with unseen ones encoded on demand."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray, text_model: str, device: str = "cpu"):
        self.row = {t: i for i, t in enumerate(texts)}  # sentence -> its row of `matrix`
        self.matrix = vectors  # (n_texts, text_dim)
        self.text_model, self.device = text_model, device
        self.encoder: TextEncoder | None = None  # made on first use
        self.external: Callable[[list[str]], np.ndarray] | None = None  # a bounded shared cache (the API's)
        self._lock = threading.Lock()

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), text_dim) float32; "" gives zeros; unseen sentences are encoded once and
        remembered (or asked of `external`)."""
        if self.external is not None:
            return self._vectors_via(self.external, texts)
        new = [t for t in dict.fromkeys(texts) if t and t not in self.row]
        if new:
            with self._lock:
                new = [t for t in new if t not in self.row]
                if new:
                    vectors = self.text_encoder().encode(new)
                    base = len(self.matrix)
                    self.matrix = np.vstack([self.matrix, vectors])
                    self.row.update({t: base + i for i, t in enumerate(new)})
        out = np.zeros((len(texts), self.matrix.shape[1]), np.float32)
        for i, t in enumerate(texts):
            if t:
                out[i] = self.matrix[self.row[t]]
        return out

    def unseen(self, texts: Sequence[str]) -> list[str]:
        """The ``texts`` whose vectors are not held here."""
        return [t for t in texts if t not in self.row]

    def _vectors_via(self, encode: Callable[[list[str]], np.ndarray], texts: Sequence[str]) -> np.ndarray:
        unseen = [t for t in dict.fromkeys(texts) if t and t not in self.row]
        found = dict(zip(unseen, encode(unseen))) if unseen else {}
        out = np.zeros((len(texts), self.matrix.shape[1]), np.float32)
        for i, t in enumerate(texts):
            if t:
                out[i] = self.matrix[self.row[t]] if t in self.row else found[t]
        return out

    def text_encoder(self) -> TextEncoder:
        """The bundle's text model (`text.encoder.TextEncoder`), loaded on first use."""
        if self.encoder is None:
            from recsys_tasks.text.encoder import TextEncoder

            self.encoder = TextEncoder(self.text_model, device=self.device)
        return self.encoder

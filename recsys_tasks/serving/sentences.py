"""`SentenceCache`: vectors of recent sentences (stated tastes, profiles) in front of the text encoder."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

__all__ = ["SentenceCache"]


class SentenceCache:
    """Vectors of recent sentences (LRU, bounded) in front of one text encoder; the misses of a
    call are encoded in one pass. Thread-safe: up to ``lanes`` encoder passes at once (each on
    its own thread, one torch thread each), and a lookup never waits for a pass."""

    def __init__(
        self,
        text_model: str,
        size: int,
        lanes: int = 1,
        runtime: str = "torch",
        onnx_dir: str | Path | None = None,
        threads: int = 1,
        path: str | None = None,
    ):
        from recsys_tasks.text.onnx import sentence_encoder

        self.text_model = text_model  # the identity; ``path``: where to load it from, if not the same (a bundled one)
        self._encoder = sentence_encoder(path or text_model, runtime, onnx_dir, threads)  # ONNX Runtime or PyTorch
        self.runtime = getattr(self._encoder, "runtime", "torch")  # what serves: "onnx" may have fallen back
        self._encoder.encode_padded(["warm up", "warm up the padded pass"])  # lazy initialisation: not a request
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()  # the dict
        self._encoding = threading.BoundedSemaphore(max(1, lanes))  # passes at once
        self.passes = 0

    def __contains__(self, text: str) -> bool:
        return text in self._recent

    def __call__(self, texts: list[str]) -> np.ndarray:
        found = self._lookup(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            with self._encoding:
                found.update(self._lookup(missing))  # encoded by another lane meanwhile
                missing = [t for t in missing if t not in found]
                if missing:
                    found.update(zip(missing, self._encoder.encode_padded(missing)))
                    self.passes += 1
                    with self._lock:
                        self._recent.update((t, found[t]) for t in missing)
                        while len(self._recent) > self._size:
                            self._recent.popitem(last=False)
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, self._encoder.dim), np.float32)

    def _lookup(self, texts: list[str]) -> dict[str, np.ndarray]:
        with self._lock:
            hits = {t: self._recent[t] for t in texts if t in self._recent}
            for t in hits:
                self._recent.move_to_end(t)
        return hits

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode without keeping the vectors (item texts: they live in the catalog instead)."""
        with self._encoding:
            return self._encoder.encode(texts)

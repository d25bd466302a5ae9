"""Stage 3, text_embed: item text, profile text and stated-taste sentences through the encoder
(`text.encoder.TextEncoder`), each distinct text encoded once, and only if no earlier run of the same
encoder has (`VectorCache`: ``text.cache_dir``, by default ``$RECSYS_WORKDIR/cache/text``), or this run's encoding
shards have (`text.shards`: the DAG's mapped tasks fill the cache first, and text_embed only assembles)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recsys_tasks.artifacts import StageResult, atomic_dir, finish, write_json
from recsys_tasks.config import TextConfig, workdir
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.text.encoder import TextEncoder
from recsys_tasks.text.texts import distinct_texts, snapshot_texts

log = logging.getLogger(__name__)

MAX_PARTS = 8  # a cache folder's part files past which they are merged into one


ADAPTED = "encoder"  # text_embed's output folder holding the adapted encoder (`text.adapt`), when one was kept


def adapted_encoder(text_dir: str | Path) -> str | None:
    """The encoder folder a text_embed output's vectors came from where `text.adapt` kept an adapter, else None
    (the configured ``text.model`` made them)."""
    folder = Path(text_dir) / ADAPTED
    return str(folder) if (folder / "config.json").exists() else None


def text_embed(
    cfg: TextConfig, snapshot_dir: str | Path, out_dir: str | Path, positive_threshold: float = 4.0, seed: int = 42
) -> StageResult:
    """Encode items, user profiles and taste sentences; rows aligned with the snapshot's tables. With ``cfg.adapt``
    the encoder is first LoRA-trained on the split's training interactions (liked: rating >= ``positive_threshold``;
    pairs sampled with ``seed``), and kept beside the vectors (`adapted_encoder`) if it beat the base encoder."""
    dataset = Dataset.load(snapshot_dir)
    encoder = TextEncoder(cfg.model, cfg.device, cfg.max_length)
    adapted: dict[str, float] = {}
    if cfg.adapt:
        from recsys_tasks.data.split import Split
        from recsys_tasks.text.adapt import adapt_encoder, training_pairs

        train = Split.load(snapshot_dir).train
        pairs, held = training_pairs(dataset, train, positive_threshold, cfg.adapt_pairs, seed)
        adapted = adapt_encoder(encoder, pairs, held, cfg, seed)
        log.info("text_embed: %s", adapted)
    texts = snapshot_texts(dataset)
    item_texts, profiles, tastes = texts["items"], texts["users"], texts["tastes"]
    unique = distinct_texts(texts)  # encode each distinct text once
    root = None if cfg.adapt else cache_root(cfg)  # adapted weights differ every run: nothing to reuse
    cache = VectorCache.for_encoder(root, encoder) if root is not None else None
    start = time.perf_counter()
    vectors, n_encoded = encode_new(encoder, unique, cfg.batch_size, cache)
    seconds = time.perf_counter() - start
    row = {t: i for i, t in enumerate(unique)}
    take = lambda texts: vectors[[row[t] for t in texts]]  # noqa: E731
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / "items.npy", take(item_texts))
        np.save(tmp / "users.npy", take(profiles))
        np.save(tmp / "tastes.npy", take(tastes))
        write_json(tmp / "texts.json", {"items": item_texts, "users": profiles, "tastes": tastes})
        artifacts = {name: str(tmp / f"{name}.npy") for name in ("items", "users", "tastes")}
        artifacts["texts"] = str(tmp / "texts.json")
        if adapted.get("adapt_used"):
            encoder.model.save_pretrained(tmp / ADAPTED)
            encoder.tokenizer.save_pretrained(tmp / ADAPTED)
            artifacts["encoder"] = str(tmp / ADAPTED)
        metrics = {
            **adapted,
            "n_texts": float(len(unique)),
            "n_encoded": float(n_encoded),
            "n_cached": float(len(unique) - n_encoded),
            "encode_seconds": seconds,
            "texts_per_second": n_encoded / max(seconds, 1e-9),
            "dim": float(encoder.dim),
        }
        info = {"model": cfg.model, "model_path": encoder.path, "device": encoder.device.type}
        log.info("text_embed: %s %s", metrics, info)
        return finish(StageResult("text_embed", str(Path(out_dir)), artifacts, metrics, info), tmp)


def cache_root(cfg: TextConfig) -> Path | None:
    """Where vectors are cached: ``cfg.cache_dir``, ``$RECSYS_WORKDIR/cache/text`` if empty, None if "off"."""
    if cfg.cache_dir.strip().lower() == "off":
        return None
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir.strip() else workdir() / "cache" / "text"


def encode_new(
    encoder: TextEncoder, texts: Sequence[str], batch_size: int, cache: VectorCache | None
) -> tuple[np.ndarray, int]:
    """(len(texts), dim) vectors of distinct ``texts``, those in ``cache`` read from it, the others encoded (and
    added to it); and how many were encoded."""
    if cache is None:
        return encoder.encode(texts, batch_size or None, progress=True), len(texts)
    found, vectors = cache.lookup(texts)
    missing = np.flatnonzero(~found).tolist()
    new = np.zeros((0, encoder.dim), np.float32)
    if len(missing):
        new = encoder.encode([texts[i] for i in missing], batch_size or None, progress=True)
        vectors[missing] = new
    cache.add([texts[i] for i in missing], new)  # nothing new: no part, but the parts sharded encoding left merged
    log.info("text_embed: %d texts from the cache (%s), %d encoded", int(found.sum()), cache.folder, len(missing))
    return vectors, len(missing)


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """(n, 16) uint8: each text's SHA-256, first 16 bytes (what the cache stores instead of the text)."""
    digests = b"".join(hashlib.sha256(t.encode("utf-8")).digest()[:16] for t in texts)
    return np.frombuffer(digests, np.uint8).reshape(len(texts), 16).copy()


def encoder_fingerprint(encoder: TextEncoder) -> str:
    """SHA-256 of what decides an encoder's vectors: its weights (names, dtypes, shapes, values), its tokenizer and
    ``max_length``."""
    import torch

    digest = hashlib.sha256(f"max_length={encoder.max_length}".encode())
    backend = getattr(encoder.tokenizer, "backend_tokenizer", None)
    digest.update(backend.to_str().encode() if backend is not None else repr(encoder.tokenizer).encode())
    for name, tensor in sorted(encoder.model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class VectorCache:
    """Vectors by text for one encoder, in one folder of ``part-*.npz`` files ((n, 16) text keys, (n, dim) float32
    vectors): each run adds one part with what it encoded, written to a temporary name and renamed, so a crash
    never leaves half a part; past ``MAX_PARTS`` parts they are merged into one."""

    def __init__(self, folder: Path, dim: int):
        self.folder, self.dim = Path(folder), dim

    @classmethod
    def for_encoder(cls, root: Path, encoder: TextEncoder) -> VectorCache:
        """The cache folder of ``encoder`` under ``root``, named by `encoder_fingerprint`, described in encoder.json."""
        fingerprint = encoder_fingerprint(encoder)
        cache = cls(Path(root) / fingerprint[:24], encoder.dim)
        about = cache.folder / "encoder.json"
        if not about.exists():
            cache.folder.mkdir(parents=True, exist_ok=True)
            tmp = cache.folder / f".encoder-{uuid.uuid4().hex}.tmp"
            write_json(
                tmp,
                {
                    "model": encoder.name,
                    "path": encoder.path,
                    "max_length": encoder.max_length,
                    "fingerprint": fingerprint,
                },
            )
            os.replace(tmp, about)
        return cache

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.npz")) if self.folder.is_dir() else []

    def load(self) -> tuple[np.ndarray, np.ndarray, list[Path]]:
        """Every cached (keys, vectors), and the parts they came from. A part that cannot be read, is truncated or
        corrupt (the zip's CRC-32), or holds arrays of the wrong shape or non-finite vectors is skipped with a
        warning naming it: its texts are then missing and encoded anew, never read wrong."""
        keys, vectors, read = [np.zeros((0, 16), np.uint8)], [np.zeros((0, self.dim), np.float32)], []
        for part in self.parts():
            try:
                with np.load(part, allow_pickle=False) as z:
                    k, v = z["keys"], z["vectors"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                log.warning("text cache: %s is skipped: %s", part, exc)
                continue
            if k.shape != (v.shape[0], 16) or k.dtype != np.uint8 or v.shape[1:] != (self.dim,):
                log.warning("text cache: %s is skipped: keys %s %s, vectors %s", part, k.shape, k.dtype, v.shape)
                continue
            if not np.isfinite(v).all():
                log.warning("text cache: %s is skipped: non-finite vectors", part)
                continue
            keys.append(k)
            vectors.append(v)
            read.append(part)
        return np.concatenate(keys), np.concatenate(vectors), read

    def lookup(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(found: bool per text, (len(texts), dim) float32: the cached vector where found, zeros elsewhere)."""
        keys, vectors, _ = self.load()
        row = {k.tobytes(): i for i, k in enumerate(keys)}
        at = np.array([row.get(k.tobytes(), -1) for k in text_keys(texts)], dtype=np.int64)
        found = at >= 0
        out = np.zeros((len(texts), self.dim), np.float32)
        out[found] = vectors[at[found]]
        return found, out

    def add(self, texts: Sequence[str], vectors: np.ndarray, compact: bool = True) -> Path | None:
        """Write ``vectors`` of ``texts`` as one new part (none if ``texts`` is empty) and return its path; then,
        if ``compact``, merge the parts (that one too) if there are more than ``MAX_PARTS``. Writers running side by
        side, as encoding shards do, pass False: only a writer alone may merge and remove parts."""
        part = self._write(text_keys(texts), np.asarray(vectors, np.float32)) if len(texts) else None
        if compact and len(self.parts()) > MAX_PARTS:
            self.compact()
        return part

    def compact(self) -> None:
        """Merge every part into one (duplicates dropped), then remove the merged parts."""
        keys, vectors, read = self.load()
        _, first = np.unique(keys, axis=0, return_index=True)
        first.sort()
        self._write(keys[first], vectors[first])
        for part in read:
            part.unlink(missing_ok=True)

    def _write(self, keys: np.ndarray, vectors: np.ndarray) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz"
        tmp = self.folder / f".{name}.tmp"
        try:
            with open(tmp, "wb") as f:
                np.savez(f, keys=keys, vectors=vectors)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.folder / name)
        finally:
            tmp.unlink(missing_ok=True)
        return self.folder / name

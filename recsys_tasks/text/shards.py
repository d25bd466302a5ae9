"""Sharded text encoding: the texts a snapshot needs, encoded in shards by separate workers into the vector cache
(`embed.VectorCache`), so that text_embed then finds every vector cached and only assembles.

The ``recsys_cold_start`` DAG maps `encode_shard` over `shard_jobs` (``text.shards`` mapped tasks on the GPU
queue). Shard ``i`` of ``n`` holds the texts whose cache key (`embed.text_keys`, the first 8 bytes of the text's
SHA-256 read as an integer) is ``i`` modulo ``n``: each text is in exactly one shard, whatever lists it and in
whatever order, so a retried or re-run shard redoes only its own texts. A shard encodes those of its texts the cache
lacks and writes them as one part file (a temporary name, then renamed), and never merges or removes parts, so
shards running side by side never touch each other's files; a shard with nothing to encode writes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys_tasks.config import TextConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.text.embed import VectorCache, cache_root, text_keys
from recsys_tasks.text.texts import distinct_texts, snapshot_texts

log = logging.getLogger(__name__)

__all__ = ["encode_shard", "needed_texts", "shard_jobs", "shard_of", "shard_texts"]


def needed_texts(snapshot_dir: str | Path) -> list[str]:
    """Every distinct text text_embed encodes for the snapshot (items, profiles, taste sentences), in its order."""
    return distinct_texts(snapshot_texts(Dataset.load(snapshot_dir)))


def shard_of(texts: Sequence[str], n_shards: int) -> np.ndarray:
    """(n,) int64: each text's shard, its cache key's first 8 bytes (big-endian) modulo ``n_shards``: stable across
    processes, machines and Python versions (unlike ``hash``)."""
    if n_shards < 1:
        raise ValueError(f"text shards must be 1 or more, got {n_shards}")
    head = np.ascontiguousarray(text_keys(texts)[:, :8]).view(">u8").ravel()  # (n,) uint64
    return (head % np.uint64(n_shards)).astype(np.int64)


def shard_texts(texts: Sequence[str], shard: int, n_shards: int) -> list[str]:
    """The texts of shard ``shard`` of ``n_shards``, in the order given."""
    if n_shards >= 1 and not 0 <= shard < n_shards:
        raise ValueError(f"text shard must be in 0..{n_shards - 1}, got {shard}")
    return [texts[int(i)] for i in np.flatnonzero(shard_of(texts, n_shards) == shard)]


def shard_jobs(snapshot_dir: str | Path, n_shards: int) -> list[dict[str, Any]]:
    """One job per shard for the DAG to map `encode_shard` over; none for 1 shard (text_embed then encodes alone,
    as without sharding)."""
    if n_shards < 1:
        raise ValueError(f"text shards must be 1 or more, got {n_shards}")
    if n_shards == 1:
        return []
    return [{"shard": i, "shards": n_shards, "snapshot": str(snapshot_dir)} for i in range(n_shards)]


def encode_shard(cfg: TextConfig, snapshot_dir: str | Path, shard: int, n_shards: int) -> dict[str, Any]:
    """Encode the texts of shard ``shard`` of ``n_shards`` of the snapshot that the cache (``cfg.cache_dir``,
    `embed.cache_root`) lacks, into one new part of it. Returns a report: shard, shards, texts (the shard's),
    encoded, cached, part (the file written, or None), seconds."""
    start = time.perf_counter()
    root = cache_root(cfg)
    if root is None:
        raise ValueError("text shards write into the vector cache, but text.cache_dir is 'off'")
    mine = shard_texts(needed_texts(snapshot_dir), shard, n_shards)
    encoded, part = 0, None
    if mine:  # an empty shard loads no model and writes nothing
        from recsys_tasks.text.encoder import TextEncoder

        encoder = TextEncoder(cfg.model, cfg.device, cfg.max_length)
        cache = VectorCache.for_encoder(root, encoder)
        found, _ = cache.lookup(mine)
        missing = [t for t, hit in zip(mine, found, strict=True) if not hit]
        if missing:
            vectors = encoder.encode(missing, cfg.batch_size or None, progress=True)  # (len(missing), dim)
            part = cache.add(missing, vectors, compact=False)  # shards run side by side: none merges
        encoded = len(missing)
    report = {
        "shard": shard,
        "shards": n_shards,
        "texts": len(mine),
        "encoded": encoded,
        "cached": len(mine) - encoded,
        "part": str(part) if part is not None else None,
        "seconds": round(time.perf_counter() - start, 2),
    }
    log.info("text shard %d/%d: %d texts, %d encoded -> %s", shard, n_shards, len(mine), encoded, part or "nothing")
    return report

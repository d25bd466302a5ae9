"""Stage 3, text_embed: item text, profile text and stated-taste sentences through the encoder
(`text.encoder.TextEncoder`), each distinct text encoded once."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recsys_tasks.artifacts import StageResult, atomic_dir, finish, write_json
from recsys_tasks.config import TextConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.text.encoder import TextEncoder
from recsys_tasks.text.texts import item_text, profile_text, taste_sentences

log = logging.getLogger(__name__)


def text_embed(cfg: TextConfig, snapshot_dir: str | Path, out_dir: str | Path) -> StageResult:
    """Encode items, user profiles and taste sentences; rows aligned with the snapshot's tables."""
    import time

    dataset = Dataset.load(snapshot_dir)
    encoder = TextEncoder(cfg.model, cfg.device, cfg.max_length)
    item_texts = [item_text(r) for r in dataset.items.to_dict("records")]
    profiles = [profile_text(r) for r in dataset.users.to_dict("records")]
    vocab = sorted({g for gs in dataset.genre_lists() for g in gs})
    tastes = taste_sentences(vocab)
    unique = list(dict.fromkeys(item_texts + profiles + tastes))  # encode each distinct text once
    start = time.perf_counter()
    vectors = encoder.encode(unique, cfg.batch_size, progress=True)
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
        metrics = {
            "n_texts": float(len(unique)),
            "encode_seconds": seconds,
            "texts_per_second": len(unique) / max(seconds, 1e-9),
            "dim": float(encoder.dim),
        }
        info = {"model": cfg.model, "model_path": encoder.path, "device": encoder.device.type}
        log.info("text_embed: %s %s", metrics, info)
        return finish(StageResult("text_embed", str(Path(out_dir)), artifacts, metrics, info), tmp)

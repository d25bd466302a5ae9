"""The trained model's arrays and vocabularies: the *bundle*, a directory that training writes and serving reads.

A bundle directory (saved by finetune, logged to MLflow, loaded by the CLI, the pyfunc model and the API):
- ``model.pt``: the `HybridModel` weights and shapes (loaded with ``weights_only=True``);
- ``catalog.parquet`` + ``item_content.npy``: items, their text ⊕ KG features, their ID row;
- ``users.parquet`` + ``histories.parquet``: known users' profiles and training histories;
- ``texts.parquet`` + ``text_vectors.npy``: sentences already encoded (profiles, tastes);
- ``kg_demo.npy`` + ``bundle.json``: KG vectors of demographic values, vocabularies, config;
- ``item_links.parquet``: items' shared KG neighbours in plain words, for reasons (`kg.links`;
  absent from bundles saved before it: their reasons never name a KG link);
- ``content_map.npz``: the (text, genres, year) -> (vector, bias) map that serves items without an ID (`content_map`);
- ``fusion.json`` + ``ease.npy``: the prior and EASE weights added to the model's scores (`fusion`).
Bundles saved before the last two load without them: the towers serve new items, nothing is fused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_tasks.artifacts import read_json, write_json
from recsys_tasks.model.content_map import ContentMap

__all__ = ["Bundle"]


@dataclass
class Bundle:
    """Arrays and vocabularies (no torch objects): what training writes and serving reads."""

    catalog: pd.DataFrame  # item_id, title, year, genres, description, entity_id, id_row
    item_content: np.ndarray  # (n_items, text_dim + kg_dim) float32
    users: pd.DataFrame  # user_id, age, gender, occupation, zip_code
    histories: pd.DataFrame  # user_id, item_id, rating, timestamp (training part)
    texts: list[str]
    text_vectors: np.ndarray  # (n_texts, text_dim)
    kg_demo: dict[str, np.ndarray]  # "gender:M" -> (kg_dim,)
    meta: dict[str, Any]  # vocabularies, text model, dims, config
    item_links: pd.DataFrame | None = None  # entity_id, relation, value (`kg.links.reason_links`)
    content_map: ContentMap | None = None  # serves items without an ID (`content_map`)
    fusion: dict | None = None  # `fusion.fusion_meta`: weights, users left out of the prior, report
    ease: np.ndarray | None = None  # (n_id_items, n_id_items) float32 EASE weights (`fusion`)

    def save(self, directory: Path) -> None:
        self.catalog.to_parquet(directory / "catalog.parquet", index=False)
        np.save(directory / "item_content.npy", self.item_content.astype(np.float32))
        self.users.to_parquet(directory / "users.parquet", index=False)
        self.histories.to_parquet(directory / "histories.parquet", index=False)
        pd.DataFrame({"text": self.texts}).to_parquet(directory / "texts.parquet", index=False)
        np.save(directory / "text_vectors.npy", self.text_vectors.astype(np.float32))
        labels = sorted(self.kg_demo)
        kg = np.stack([self.kg_demo[k] for k in labels]) if labels else np.zeros((0, self.meta["kg_dim"]), np.float32)
        np.save(directory / "kg_demo.npy", kg.astype(np.float32))
        write_json(directory / "bundle.json", {**self.meta, "kg_demo_labels": labels})
        if self.item_links is not None:
            self.item_links.to_parquet(directory / "item_links.parquet", index=False)
        if self.content_map is not None:
            self.content_map.save(directory)
        if self.fusion is not None:
            write_json(directory / "fusion.json", self.fusion)
        if self.ease is not None:
            np.save(directory / "ease.npy", self.ease.astype(np.float32))

    @classmethod
    def load(cls, directory: str | Path) -> Bundle:
        d = Path(directory)
        meta = read_json(d / "bundle.json")
        labels = meta.pop("kg_demo_labels")
        kg = np.load(d / "kg_demo.npy")
        links = pd.read_parquet(d / "item_links.parquet") if (d / "item_links.parquet").exists() else None
        fusion = read_json(d / "fusion.json") if (d / "fusion.json").exists() else None
        ease = np.load(d / "ease.npy", allow_pickle=False) if (d / "ease.npy").exists() else None
        return cls(
            pd.read_parquet(d / "catalog.parquet"),
            np.load(d / "item_content.npy"),
            pd.read_parquet(d / "users.parquet"),
            pd.read_parquet(d / "histories.parquet"),
            pd.read_parquet(d / "texts.parquet")["text"].tolist(),
            np.load(d / "text_vectors.npy"),
            dict(zip(labels, kg)),
            meta,
            links,
            ContentMap.load(d),
            fusion,
            ease,
        )

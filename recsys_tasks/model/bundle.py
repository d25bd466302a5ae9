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

What serving would otherwise recount from the training histories at every load (minutes at 20M
interactions) is saved beside them, and loaded without reading ``histories.parquet``:
- ``history_index/``: each known user's history as arrays (`HistoryIndex`, memory-mapped);
- ``popular.json``: each segment's most liked items (the reasons' "popular with ...");
- ``prior.npz``: the fusion prior's positive counts per demographic group (`SavedPopularity`).
The ``.npy`` arrays are memory-mapped copy-on-write: pages are read when touched, writes stay private.
Bundles saved before these files load as before (the histories read and counted).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_tasks.artifacts import read_json, write_json
from recsys_tasks.model.content_map import ContentMap
from recsys_tasks.model.popularity import BACKOFF, DemographicPopularity

__all__ = ["Bundle", "HistoryIndex", "SavedPopularity"]

History = tuple[tuple[str, float, int], ...]  # (item_id, rating, timestamp), oldest first


@dataclass
class Bundle:
    """Arrays and vocabularies (no torch objects): what training writes and serving reads."""

    ENCODER: ClassVar[str] = "text_encoder"  # an adapted text encoder's folder (text.adapt), saved in the bundle

    catalog: pd.DataFrame  # item_id, title, year, genres, description, entity_id, id_row
    item_content: np.ndarray  # (n_items, text_dim + kg_dim) float32
    users: pd.DataFrame  # user_id, age, gender, occupation, zip_code
    _histories: pd.DataFrame | None  # user_id, item_id, rating, timestamp (training part); None: not read yet
    texts: list[str]
    text_vectors: np.ndarray  # (n_texts, text_dim)
    kg_demo: dict[str, np.ndarray]  # "gender:M" -> (kg_dim,)
    meta: dict[str, Any]  # vocabularies, text model, dims, config
    item_links: pd.DataFrame | None = None  # entity_id, relation, value (`kg.links.reason_links`)
    content_map: ContentMap | None = None  # serves items without an ID (`content_map`)
    fusion: dict | None = None  # `fusion.fusion_meta`: weights, users left out of the prior, report
    ease: np.ndarray | None = None  # (n_id_items, n_id_items) float32 EASE weights (`fusion`)
    history_index: HistoryIndex | None = None  # known users' histories, from ``history_index/``
    popular: dict[tuple[str, ...], list[str]] | None = None  # `DemographicPopularity.most_liked` for the reasons
    prior: SavedPopularity | None = None  # the fusion's prior (`fusion.id_prior`), saved
    directory: Path | None = field(default=None, repr=False)  # where it was loaded from (histories read on demand)

    @property
    def histories(self) -> pd.DataFrame:
        """The training histories; read from ``histories.parquet`` on first use in a loaded bundle."""
        if self._histories is None:
            if self.directory is None:
                raise ValueError("bundle: no histories and no directory to read histories.parquet from")
            self._histories = pd.read_parquet(self.directory / "histories.parquet")
        return self._histories

    @histories.setter
    def histories(self, frame: pd.DataFrame) -> None:
        self._histories = frame

    def save(self, directory: Path) -> None:
        """Every file of the bundle, with what serving derives from the histories (see the module)."""
        self.catalog.to_parquet(directory / "catalog.parquet", index=False)
        np.save(directory / "item_content.npy", self.item_content.astype(np.float32))
        self.users.to_parquet(directory / "users.parquet", index=False)
        self.histories.to_parquet(directory / "histories.parquet", index=False)
        pd.DataFrame({"text": self.texts}).to_parquet(directory / "texts.parquet", index=False)
        np.save(directory / "text_vectors.npy", self.text_vectors.astype(np.float32))
        labels = sorted(self.kg_demo)
        kg = np.stack([self.kg_demo[k] for k in labels]) if labels else np.zeros((0, self.meta["kg_dim"]), np.float32)
        np.save(directory / "kg_demo.npy", kg.astype(np.float32))
        meta = {**self.meta, "kg_demo_labels": labels}
        meta.pop("text_model_path", None)  # where a loaded bundle's encoder lies: set again on every load
        if self.meta.get("text_encoder_in_bundle"):  # an adapted encoder (text.adapt) travels with its vectors
            source = encoder_path(self.meta)
            if Path(source).resolve() != (directory / self.ENCODER).resolve():
                shutil.copytree(source, directory / self.ENCODER, dirs_exist_ok=True)
            meta["text_model"] = _bundled_encoder_id(directory / self.ENCODER)
        write_json(directory / "bundle.json", meta)
        if self.item_links is not None:
            self.item_links.to_parquet(directory / "item_links.parquet", index=False)
        if self.content_map is not None:
            self.content_map.save(directory)
        if self.fusion is not None:
            write_json(directory / "fusion.json", self.fusion)
        if self.ease is not None:
            np.save(directory / "ease.npy", self.ease.astype(np.float32))
        self._save_serving_state(directory)

    def _save_serving_state(self, directory: Path) -> None:
        """``history_index/``, ``popular.json`` and (with a fusion) ``prior.npz``: computed once here, not per load."""
        from recsys_tasks.explain.reasons import LEVELS, TOP_N
        from recsys_tasks.model.fusion import id_prior

        item_ids = self.catalog["item_id"].astype(str).tolist()
        threshold = float(self.meta.get("positive_threshold", 4.0))
        index = self.history_index
        if index is None or index.built_from is not self.histories or index.item_ids[: len(item_ids)] != item_ids:
            index = HistoryIndex.build(self.histories, item_ids)  # none built from these histories and this catalog
        index.save(directory / HistoryIndex.FOLDER)
        popular = DemographicPopularity(item_ids, self.histories, self.users, threshold).most_liked(LEVELS, TOP_N)
        write_json(directory / "popular.json", [[list(k), v] for k, v in popular.items()])
        if self.fusion is not None:
            kept = self.histories[~self.histories["user_id"].astype(str).isin(set(self.fusion["excluded_users"]))]
            prior = id_prior(self.catalog, int(self.meta["n_id_items"]), kept, self.users, threshold)
            SavedPopularity.save(prior, directory / SavedPopularity.FILE)

    @classmethod
    def load(cls, directory: str | Path) -> Bundle:
        """The bundle in ``directory``; its ``.npy`` arrays memory-mapped copy-on-write."""
        d = Path(directory)
        meta = read_json(d / "bundle.json")
        if meta.get("text_encoder_in_bundle"):  # "text_model" stays its identity, the same wherever it is downloaded
            meta["text_model_path"] = str(d / cls.ENCODER)
        labels = meta.pop("kg_demo_labels")
        kg = np.load(d / "kg_demo.npy")
        links = pd.read_parquet(d / "item_links.parquet") if (d / "item_links.parquet").exists() else None
        fusion = read_json(d / "fusion.json") if (d / "fusion.json").exists() else None
        ease = np.load(d / "ease.npy", mmap_mode="c") if (d / "ease.npy").exists() else None
        catalog = pd.read_parquet(d / "catalog.parquet")
        index = HistoryIndex.load(d / HistoryIndex.FOLDER, catalog["item_id"].astype(str).tolist())
        popular = read_json(d / "popular.json") if (d / "popular.json").exists() else None
        prior = SavedPopularity.load(d / SavedPopularity.FILE) if (d / SavedPopularity.FILE).exists() else None
        return cls(
            catalog,
            np.load(d / "item_content.npy", mmap_mode="c"),
            pd.read_parquet(d / "users.parquet"),
            None if index is not None else pd.read_parquet(d / "histories.parquet"),
            pd.read_parquet(d / "texts.parquet")["text"].tolist(),
            np.load(d / "text_vectors.npy", mmap_mode="c"),
            dict(zip(labels, kg)),
            meta,
            links,
            ContentMap.load(d),
            fusion,
            ease,
            index,
            None if popular is None else {tuple(k): list(v) for k, v in popular},
            prior,
            d,
        )


def encoder_path(meta: Mapping[str, Any]) -> str:
    """Where to load a bundle's text encoder from: the folder inside it (`text.adapt`), else its ``text_model``
    (a name or path). ``meta["text_model"]`` is the encoder's identity, what ingested vectors are checked against."""
    return str(meta.get("text_model_path") or meta["text_model"])


def _bundled_encoder_id(folder: Path) -> str:
    """A location-free name for a bundled encoder: a digest of its files (names and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return f"bundled-encoder:{digest.hexdigest()[:20]}"


class HistoryIndex(Mapping[str, History]):
    """Known users' training histories as arrays (users, offsets, catalog rows, ratings, timestamps): a
    user's history is built when asked, oldest first (by timestamp, then item id, as `RequestAdapter`
    orders them). The last `CACHED` built are kept, so asking twice gives the same tuple (the adapter
    tells a known user's own history by identity)."""

    FOLDER = "history_index"
    CACHED = 8192
    _ARRAYS = ("users", "offsets", "rows", "ratings", "timestamps", "others")

    def __init__(self, arrays: Mapping[str, np.ndarray], item_ids: Sequence[str]):
        self.arrays = dict(arrays)
        self.item_ids = [*item_ids, *self.arrays["others"].tolist()]  # the catalog's at build time, then others
        self._position = {u: i for i, u in enumerate(self.arrays["users"].tolist())}
        self._cache: dict[str, History] = {}
        self.built_from: pd.DataFrame | None = None  # the frame `build` read (None: loaded from a folder)

    @classmethod
    def build(cls, histories: pd.DataFrame, item_ids: Sequence[str]) -> HistoryIndex:
        """From a histories frame (user_id, item_id, rating, timestamp) over a catalog's ``item_ids``; an
        item the catalog lacks is kept under a row past the catalog's (``others``)."""
        frame = histories.assign(user_id=histories["user_id"].astype(str), item_id=histories["item_id"].astype(str))
        frame = frame.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
        row = {item: i for i, item in enumerate(item_ids)}
        codes = frame["item_id"].map(row)
        others = np.unique(frame["item_id"].to_numpy(dtype=str)[codes.isna().to_numpy()])
        if len(others):
            codes = codes.fillna(frame["item_id"].map({o: len(item_ids) + n for n, o in enumerate(others)}))
        users, counts = np.unique(frame["user_id"].to_numpy(dtype=str), return_counts=True)
        arrays = {
            "users": users,
            "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            "rows": codes.to_numpy(np.int64).astype(np.int32),
            "ratings": frame["rating"].to_numpy(np.float64),
            "timestamps": frame["timestamp"].to_numpy(np.int64),
            "others": others.astype(str),
        }
        index = cls(arrays, item_ids)
        index.built_from = histories
        return index

    def save(self, folder: Path) -> None:
        folder.mkdir(exist_ok=True)
        for name in self._ARRAYS:
            np.save(folder / f"{name}.npy", self.arrays[name], allow_pickle=False)

    @classmethod
    def load(cls, folder: Path, item_ids: Sequence[str]) -> HistoryIndex | None:
        """The saved index (arrays memory-mapped read-only), None where the bundle has none."""
        if not folder.is_dir():
            return None
        return cls({name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in cls._ARRAYS}, item_ids)

    def __getitem__(self, user_id: str) -> History:
        found = self._cache.get(user_id)
        if found is None:
            at = self._position[user_id]  # KeyError: not a known user
            start, end = int(self.arrays["offsets"][at]), int(self.arrays["offsets"][at + 1])
            items = [self.item_ids[r] for r in self.arrays["rows"][start:end].tolist()]
            ratings = self.arrays["ratings"][start:end].tolist()
            found = tuple(zip(items, ratings, self.arrays["timestamps"][start:end].tolist()))
            if len(self._cache) >= self.CACHED:
                self._cache.pop(next(iter(self._cache)))  # the oldest
            self._cache[user_id] = found
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._position)

    def __len__(self) -> int:
        return len(self._position)


class SavedPopularity(DemographicPopularity):
    """A `DemographicPopularity` whose groups (`BACKOFF` levels) were counted at save time and are read
    back, not recounted from the histories: `counts_for` answers as the counted one does."""

    FILE = "prior.npz"

    def __init__(self, item_ids: Sequence[str], groups: Mapping[tuple[str, ...], tuple], min_group: int):
        self.item_ids, self.n_items, self.min_group = [str(i) for i in item_ids], len(item_ids), int(min_group)
        self._saved = dict(groups)

    def groups(self, level: Sequence[str]):
        """The saved groups of ``level`` ({values: group}, users per group, positives (groups, items))."""
        found = self._saved.get(tuple(level))
        if found is None:
            raise ValueError(f"saved popularity: level {tuple(level)} was not saved; saved: {sorted(self._saved)}")
        return found

    @staticmethod
    def save(popularity: DemographicPopularity, path: Path) -> None:
        """The `BACKOFF` groups of ``popularity`` (counted now) into ``path``."""
        arrays: dict[str, Any] = {
            "item_ids": np.array(popularity.item_ids, dtype=str),
            "min_group": np.array(popularity.min_group, np.int64),
        }
        for j, level in enumerate(BACKOFF):
            keys, sizes, counts = popularity.groups(level)
            ordered = sorted(keys, key=keys.__getitem__)
            arrays[f"keys{j}"] = np.array(ordered, dtype=str).reshape(len(ordered), len(level))
            arrays[f"sizes{j}"], arrays[f"data{j}"] = np.asarray(sizes, np.int64), counts.data
            arrays[f"indices{j}"], arrays[f"indptr{j}"] = counts.indices, counts.indptr
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> SavedPopularity:
        with np.load(path, allow_pickle=False) as data:
            item_ids = data["item_ids"].tolist()
            groups = {}
            for j, level in enumerate(BACKOFF):
                keys = {tuple(str(v) for v in row): n for n, row in enumerate(data[f"keys{j}"].tolist())}
                counts = sp.csr_matrix(
                    (data[f"data{j}"], data[f"indices{j}"], data[f"indptr{j}"]), shape=(len(keys), len(item_ids))
                )
                groups[tuple(level)] = (keys, data[f"sizes{j}"], counts)
            return cls(item_ids, groups, int(data["min_group"]))

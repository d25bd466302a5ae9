"""The trained model with everything it needs to answer a query: the *bundle*.

A bundle is a directory (saved by finetune, logged to MLflow, loaded by the CLI, the pyfunc
model and the API):
- ``model.pt``: the `HybridModel` weights and shapes (loaded with ``weights_only=True``);
- ``catalog.parquet`` + ``item_content.npy``: items, their text ⊕ KG features, their ID row;
- ``users.parquet`` + ``histories.parquet``: known users' profiles and training histories;
- ``texts.parquet`` + ``text_vectors.npy``: sentences already encoded (profiles, tastes);
- ``kg_demo.npy`` + ``bundle.json``: KG vectors of demographic values, vocabularies, config.
Sentences never seen before are encoded with the bundle's text model on first use.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .artifacts import read_json, write_json
from .dataset import AGE_BANDS, age_band
from .queries import Query, profile_of
from .text import profile_text



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

    @classmethod
    def load(cls, directory: str | Path) -> "Bundle":
        d = Path(directory)
        meta = read_json(d / "bundle.json")
        labels = meta.pop("kg_demo_labels")
        kg = np.load(d / "kg_demo.npy")
        return cls(pd.read_parquet(d / "catalog.parquet"), np.load(d / "item_content.npy"),
                   pd.read_parquet(d / "users.parquet"), pd.read_parquet(d / "histories.parquet"),
                   pd.read_parquet(d / "texts.parquet")["text"].tolist(), np.load(d / "text_vectors.npy"),
                   dict(zip(labels, kg)), meta)


class UnknownIdError(KeyError):
    """A request names ids the catalog does not hold."""

    def __init__(self, field: str, ids: Sequence[str]):
        self.field, self.ids = field, list(ids)
        super().__init__(f"{field}: unknown item id(s) {self.ids[:10]}{' ...' if len(self.ids) > 10 else ''}")

    def __str__(self) -> str:
        return self.args[0]


class Recommender:
    """Scores the catalog for queries and answers recommendation requests (a `Scorer`)."""

    name = "model"

    def __init__(self, bundle: Bundle, model, device: str = "cpu"):
        import torch

        self.bundle = bundle
        self.meta = bundle.meta
        self.device = torch.device(device)
        self.model = model
        self.item_ids = bundle.catalog["item_id"].astype(str).tolist()
        self.item_row = {item: i for i, item in enumerate(self.item_ids)}
        self._text_row = {t: i for i, t in enumerate(bundle.texts)}
        self._text_vectors = bundle.text_vectors
        self._encoder = None
        self._lock = threading.Lock()
        self._vocab = {k: {v: i + 1 for i, v in enumerate(self.meta["vocab"][k])} for k in ("gender", "age", "occupation")}
        self._users = {r["user_id"]: r for r in bundle.users.to_dict("records")}
        self._histories = {u: tuple(zip(g["item_id"], g["rating"], g["timestamp"]))
                           for u, g in bundle.histories.sort_values(["timestamp", "item_id"]).groupby("user_id")}
        self.refresh()

    def refresh(self) -> None:
        """Recompute the item vectors (after training steps, or after the catalog changed)."""
        import torch

        with torch.inference_mode():
            content = torch.as_tensor(self.bundle.item_content, device=self.device)
            rows = torch.as_tensor(self.bundle.catalog["id_row"].to_numpy(copy=True), device=self.device)
            self.item_vecs, self.item_bias = self.model.items(content, rows)

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "Recommender":
        """A saved bundle with its weights (``model.pt``, read with ``weights_only=True``)."""
        from .model import load_model

        return cls(Bundle.load(directory), load_model(Path(directory) / "model.pt", device), device)

    # ------------------------------------------------------------------ scoring
    def score(self, queries: Sequence[Query]) -> np.ndarray:
        """(n_queries, n_items) float32 scores over the catalog, in catalog order."""
        import torch

        if not queries:
            return np.zeros((0, len(self.item_ids)), np.float32)
        with torch.inference_mode():
            users = self._user_vectors(queries)
            scores = users @ self.item_vecs.T + self.item_bias
        return scores.float().cpu().numpy()

    def _user_vectors(self, queries: Sequence[Query]):
        import torch

        max_hist = int(self.meta["max_history"])
        hist = np.full((len(queries), max(1, max_hist)), 0, dtype=np.int64)
        mask = np.zeros(hist.shape, dtype=np.float32)
        for q_i, q in enumerate(queries):
            rows = [self.item_row[i] for i in q.history_items if i in self.item_row][-max_hist:]
            hist[q_i, :len(rows)], mask[q_i, :len(rows)] = rows, 1.0
        demo = np.array([self.demographic_rows(q.profile) for q in queries], dtype=np.int64)
        kg = np.stack([self.kg_demo_vector(q.profile) for q in queries])
        profile = self.text_vectors([profile_text(q.profile) for q in queries])
        has_taste = np.array([1.0 if q.text else 0.0 for q in queries], dtype=np.float32)
        taste = self.text_vectors([q.text or "" for q in queries]) * has_taste[:, None]
        t = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
        return self.model.users(t(demo), t(kg), t(profile), t(taste), t(has_taste), t(hist), t(mask), self.item_vecs)

    def demographic_rows(self, profile: dict) -> tuple[int, int, int]:
        return (self._vocab["gender"].get(str(profile.get("gender") or ""), 0),
                self._vocab["age"].get(age_band(profile.get("age")), 0),
                self._vocab["occupation"].get(str(profile.get("occupation") or ""), 0))

    def kg_demo_vector(self, profile: dict) -> np.ndarray:
        from .kg import demographic_nodes

        vecs = [self.bundle.kg_demo[n] for n in demographic_nodes(profile) if n in self.bundle.kg_demo]
        return np.mean(vecs, axis=0).astype(np.float32) if vecs else np.zeros(self.meta["kg_dim"], np.float32)

    def text_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of sentences; unseen ones are encoded once and remembered."""
        new = [t for t in dict.fromkeys(texts) if t and t not in self._text_row]
        if new:
            with self._lock:
                new = [t for t in new if t not in self._text_row]
                if new:
                    vectors = self._text_encoder().encode(new)
                    base = len(self._text_vectors)
                    self._text_vectors = np.vstack([self._text_vectors, vectors])
                    self._text_row.update({t: base + i for i, t in enumerate(new)})
        out = np.zeros((len(texts), self._text_vectors.shape[1]), np.float32)
        for i, t in enumerate(texts):
            if t:
                out[i] = self._text_vectors[self._text_row[t]]
        return out

    def _text_encoder(self):
        if self._encoder is None:
            from .text import TextEncoder

            self._encoder = TextEncoder(self.meta["text_model"], device=self.device.type)
        return self._encoder

    # ------------------------------------------------------------------ requests
    def query_for(self, request: dict) -> Query:
        """A `Query` from a validated request: a known user_id brings its profile and history."""
        user_id = str(request.get("user_id") or "")
        known = self._users.get(user_id)
        profile = request.get("profile") or (profile_of(known) if known else {})
        if "history" in request and request["history"] is not None:
            history = tuple((str(h["item_id"]), float(h.get("rating") or 0.0), int(h.get("timestamp") or 0))
                            for h in request["history"])
            unknown = [h[0] for h in history if h[0] not in self.item_row]
            if unknown:
                raise UnknownIdError("history", unknown)
        else:
            history = self._histories.get(user_id, ())
        return Query(user_id, profile_of(profile), history, request.get("text") or None)

    def recommend(self, requests: Sequence[dict], k: int = 20) -> list[dict]:
        """Responses in the CLI/API schema, best first; seen items and ``exclude`` are left out."""
        queries = [self.query_for(r) for r in requests]
        scores = self.score(queries)
        out = []
        for request, query, row in zip(requests, queries, scores):
            allowed = self._allowed(request, query)
            n = int(request.get("k") or k)
            idx = np.flatnonzero(allowed)
            top = idx[np.argsort(-row[idx], kind="stable")[:n]]
            out.append({"request_id": request["request_id"],
                        "items": [{"item_id": self.item_ids[i], "score": round(float(row[i]), 6)} for i in top],
                        "model_version": str(self.meta.get("model_version", ""))})
        return out

    def _allowed(self, request: dict, query: Query) -> np.ndarray:
        n = len(self.item_ids)
        if request.get("candidates") is not None:
            unknown = [c for c in request["candidates"] if c not in self.item_row]
            if unknown:
                raise UnknownIdError("candidates", unknown)
            allowed = np.zeros(n, bool)
            allowed[[self.item_row[c] for c in request["candidates"]]] = True
        else:
            allowed = np.ones(n, bool)
        for item in list(query.history_items) + list(request.get("exclude") or []):
            if item in self.item_row:
                allowed[self.item_row[item]] = False
        return allowed

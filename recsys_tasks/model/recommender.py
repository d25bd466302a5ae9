"""The trained model with everything it needs to answer a query: the *bundle*.

A bundle is a directory (saved by finetune, logged to MLflow, loaded by the CLI, the pyfunc
model and the API):
- ``model.pt``: the `HybridModel` weights and shapes (loaded with ``weights_only=True``);
- ``catalog.parquet`` + ``item_content.npy``: items, their text ⊕ KG features, their ID row;
- ``users.parquet`` + ``histories.parquet``: known users' profiles and training histories;
- ``texts.parquet`` + ``text_vectors.npy``: sentences already encoded (profiles, tastes);
- ``kg_demo.npy`` + ``bundle.json``: KG vectors of demographic values, vocabularies, config;
- ``item_links.parquet``: items' shared KG neighbours in plain words, for reasons (`reasons`;
  absent from bundles saved before it: their reasons never name a KG link);
- ``content_map.npz``: the (text, genres, year) -> (vector, bias) map that serves items without an ID (`content_map`);
- ``fusion.json`` + ``ease.npy``: the prior and EASE weights added to the model's scores (`fusion`).
Bundles saved before the last two load without them: the towers serve new items, nothing is fused.
Sentences never seen before are encoded with the bundle's text model on first use.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from recsys_tasks.artifacts import read_json, write_json
from recsys_tasks.model.content_map import ContentMap
from recsys_tasks.data.dataset import age_band
from recsys_tasks.protocol.queries import Query, profile_of
from recsys_tasks.explain.reasons import Explainer, liked
from recsys_tasks.text.texts import profile_text



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
    item_links: pd.DataFrame | None = None  # entity_id, relation, value (`reasons.reason_links`)
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
    def load(cls, directory: str | Path) -> "Bundle":
        d = Path(directory)
        meta = read_json(d / "bundle.json")
        labels = meta.pop("kg_demo_labels")
        kg = np.load(d / "kg_demo.npy")
        links = pd.read_parquet(d / "item_links.parquet") if (d / "item_links.parquet").exists() else None
        fusion = read_json(d / "fusion.json") if (d / "fusion.json").exists() else None
        ease = np.load(d / "ease.npy", allow_pickle=False) if (d / "ease.npy").exists() else None
        return cls(pd.read_parquet(d / "catalog.parquet"), np.load(d / "item_content.npy"),
                   pd.read_parquet(d / "users.parquet"), pd.read_parquet(d / "histories.parquet"),
                   pd.read_parquet(d / "texts.parquet")["text"].tolist(), np.load(d / "text_vectors.npy"),
                   dict(zip(labels, kg)), meta, links, ContentMap.load(d), fusion, ease)


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
        # When set (the API sets a bounded, shared cache), unseen sentences are looked up there
        # instead of being encoded here and remembered for ever.
        self.sentence_encoder: Callable[[list[str]], np.ndarray] | None = None
        self._n_bundle_items = len(self.item_ids)  # rows the KG stage knew; later rows were added
        linked = bundle.catalog["entity_id"].fillna("").astype(str) if "entity_id" in bundle.catalog else []
        self._entity_rows = {e: i for i, e in enumerate(linked) if e}  # KG entity -> the trained item linked to it
        self._vocab = {k: {v: i + 1 for i, v in enumerate(self.meta["vocab"][k])} for k in ("gender", "age", "occupation")}
        self._users = {r["user_id"]: r for r in bundle.users.to_dict("records")}
        self._histories = {u: tuple(zip(g["item_id"], g["rating"], g["timestamp"]))
                           for u, g in bundle.histories.sort_values(["timestamp", "item_id"]).groupby("user_id")}
        # Reasons: the bundle's KG links and training popularity, looked up per recommended item.
        self.explainer = Explainer(bundle.catalog, bundle.item_content, bundle.histories, bundle.users,
                                   bundle.item_links, self.meta["n_id_items"], self.meta["text_dim"],
                                   self.meta.get("positive_threshold", 4.0))
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None  # `_item_arrays`
        self._tower = None  # `model.UserTower` on the CPU (`refresh`)
        self._kg_means: dict[tuple[str, ...], np.ndarray] = {}
        self._known_rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # `_rows_of` known users
        self.fusion = None
        self.set_fusion(bundle.fusion, bundle.ease)
        self.refresh()

    def set_fusion(self, meta: dict | None, ease: np.ndarray | None, fusion=None) -> None:
        """Fuse the model's scores with a tuned prior and EASE (`fusion`); None: the model alone.
        ``fusion``: the `fusion.Fusion` ``meta`` describes, where the caller has built it already."""
        from recsys_tasks.model.fusion import Fusion

        self.bundle.fusion, self.bundle.ease = meta, ease
        self.fusion = fusion if fusion is not None or meta is None else Fusion.from_meta(
            meta, ease, self.bundle.catalog, self.bundle.histories, self.bundle.users, int(self.meta["n_id_items"]),
            float(self.meta.get("positive_threshold", 4.0)))

    def set_content_map(self, content_map: ContentMap | None) -> None:
        """Serve items without an ID with ``content_map`` (None: with the content towers)."""
        self.bundle.content_map = content_map
        self.refresh()

    def refresh(self) -> None:
        """Recompute the item vectors (after training steps, or after the catalog changed)."""
        from recsys_tasks.model.hybrid import UserTower

        self.item_vecs, self.item_bias = self._item_vectors_of(self.bundle.item_content, self.bundle.catalog)
        self._arrays = None
        self._new_text = None  # `_profile_columns`
        self._tower = UserTower(self.model) if self.device.type == "cpu" else None  # the weights may have changed

    def _item_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The item vectors (n, d) and biases (n,) as float32 NumPy arrays (views on the CPU), until they change."""
        if self._arrays is None:
            self._arrays = (self.item_vecs.detach().float().cpu().numpy(), self.item_bias.detach().float().cpu().numpy())
        return self._arrays

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "Recommender":
        """A saved bundle with its weights (``model.pt``, read with ``weights_only=True``)."""
        from recsys_tasks.model.hybrid import load_model

        return cls(Bundle.load(directory), load_model(Path(directory) / "model.pt", device), device)

    # ------------------------------------------------------------------ scoring
    def score(self, queries: Sequence[Query], fused: bool = True) -> np.ndarray:
        """(n_queries, n_items) float32 scores over the catalog, in catalog order (``fused=False``:
        the model's own, without the fusion's terms: what the fusion is tuned on)."""
        if not queries:
            return np.zeros((0, len(self.item_ids)), np.float32)
        return self._score(queries, [self._history_rows(q) for q in queries],
                           [self._item_rows(q.history_items) for q in queries], fused)

    def _score(self, queries: Sequence[Query], histories: Sequence[tuple[np.ndarray, np.ndarray]],
               seen: Sequence[np.ndarray], fused: bool = True) -> np.ndarray:
        """Scores (b, n_items): the model's, plus the fusion's terms; ``histories``: `_history_rows`
        (what the model pools), ``seen``: the rows of each whole history (what EASE sums)."""
        users = self._user_vectors(queries, histories)
        if self._tower is not None:
            vecs, bias = self._item_arrays()
            scores = users @ vecs.T + bias
        else:
            import torch

            with torch.inference_mode():
                scores = (torch.as_tensor(users, device=self.device) @ self.item_vecs.T + self.item_bias).float().cpu().numpy()
        profile = self._profile_columns()
        if profile is not None:  # items without an ID: how close their text is to what the user liked
            cols, text = profile
            scores[:, cols] += self.text_profiles(histories) @ text.T
        if fused and self.fusion is not None:
            self.fusion.add(scores, queries, seen, self._fusion_keys(queries), self._named_genres(queries))
        return scores

    def liked_text(self, histories: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """(b, text_dim) float32: per `_history_rows` the unit mean text vector of the items it liked
        (`reasons.liked`, as the reasons cite them: rated at or above the positive threshold, or a
        click without a rating; zeros where there are none)."""
        text_dim, threshold = int(self.meta["text_dim"]), float(self.meta.get("positive_threshold", 4.0))
        out = np.zeros((len(histories), text_dim), np.float32)
        for q_i, (rows, ratings) in enumerate(histories):
            chosen = rows[liked(ratings, threshold)]
            if len(chosen):
                mean = self.bundle.item_content[chosen, :text_dim].mean(0)
                norm = float(np.linalg.norm(mean))
                if norm > 0:
                    out[q_i] = mean / norm
        return out

    def text_profiles(self, histories: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """(b, k): `liked_text` in the content map's profile basis (a map with a profile term)."""
        return self.liked_text(histories) @ self.bundle.content_map.profile_basis.T

    def _profile_columns(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(the catalog rows without an ID, ``profile_weight`` times their text in the content map's
        profile basis) until the catalog changes; None where the map has no profile term."""
        content_map = self.bundle.content_map
        if content_map is None or not content_map.has_profile:
            return None
        if self._new_text is None:
            cols = np.flatnonzero(self.bundle.catalog["id_row"].to_numpy() >= int(self.meta["n_id_items"]))
            text = self.bundle.item_content[cols, :int(self.meta["text_dim"])]
            self._new_text = (cols, (content_map.profile_weight * content_map.profile(text)).astype(np.float32))
        return self._new_text

    def index_arrays(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, biases) of catalog ``rows`` for a vector index (`recommend_with_index`): the item
        vectors, beside them the content map's profile term of the rows without an ID (0 for the others)
        where it has one: queried with `text_profiles` beside the user vectors, the index scores it too."""
        vecs, bias = self._item_arrays()
        rows = np.asarray(rows, np.int64)
        profile = self._profile_columns()
        if profile is None:
            return vecs[rows], bias[rows]
        cols, text = profile  # cols ascending: each row's place among them by binary search
        at = np.minimum(np.searchsorted(cols, rows), max(len(cols) - 1, 0))
        hit = cols[at] == rows if len(cols) else np.zeros(len(rows), bool)
        extra = np.zeros((len(rows), text.shape[1]), np.float32)
        extra[hit] = text[at[hit]]
        return np.hstack([vecs[rows], extra]), bias[rows]

    def _named_genres(self, queries: Sequence[Query]) -> list[set[str]] | None:
        """Per query the genres its stated taste names (the fusion's taste term), None where it has no such term."""
        if self.fusion is None or not self.fusion.weights.taste:
            return None
        return [set(self.explainer.taste_genres(q.text)) if q.text else set() for q in queries]

    def _fusion_keys(self, queries: Sequence[Query]) -> list:
        """Per query, a key for the fusion's row where it is a known user's own history (the same
        row every time: remembered), else None."""
        return [(q.user_id, q.profile.get("gender"), age_band(q.profile.get("age")), q.profile.get("occupation"))
                if q.history and self._histories.get(q.user_id) is q.history else None for q in queries]

    def _user_vectors(self, queries: Sequence[Query], histories: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """User vectors (b, d) float32; ``histories``: each query's `_history_rows`. On the CPU by
        `model.UserTower`, elsewhere by the module itself."""
        max_hist = int(self.meta["max_history"])
        hist = np.full((len(queries), max(1, max_hist)), 0, dtype=np.int64)
        mask, is_liked = np.zeros(hist.shape, dtype=np.float32), np.zeros(hist.shape, dtype=np.float32)
        threshold = float(self.meta.get("positive_threshold", 4.0))
        for q_i, (rows, ratings) in enumerate(histories):
            hist[q_i, :len(rows)], mask[q_i, :len(rows)] = rows, 1.0
            is_liked[q_i, :len(rows)] = liked(ratings, threshold)
        demo = np.array([self.demographic_rows(q.profile) for q in queries], dtype=np.int64)
        kg = np.stack([self.kg_demo_vector(q.profile) for q in queries])
        profile = self.text_vectors([profile_text(q.profile) for q in queries])
        has_taste = np.array([1.0 if q.text else 0.0 for q in queries], dtype=np.float32)
        taste = self.text_vectors([q.text or "" for q in queries]) * has_taste[:, None]
        if self._tower is not None:
            return self._tower(demo, kg, profile, taste, has_taste, hist, mask, self._item_arrays()[0], is_liked)
        import torch

        t = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
        with torch.inference_mode():
            users = self.model.users(t(demo), t(kg), t(profile), t(taste), t(has_taste), t(hist), t(mask), self.item_vecs,
                                     t(is_liked))
        return users.float().cpu().numpy()

    def _rows_of(self, query: Query) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(`_history_rows`, the rows of every history item in the catalog) of a query; for a known
        user's own history, computed once (until items are added: they may name more of it)."""
        if query.history and self._histories.get(query.user_id) is query.history:
            found = self._known_rows.get(query.user_id)
            if found is None:
                found = self._known_rows[query.user_id] = _read_only(*self._history_rows(query),
                                                                     self._item_rows(query.history_items))
            return found
        return (*self._history_rows(query), self._item_rows(query.history_items))

    def _item_rows(self, items: Sequence[str]) -> np.ndarray:
        row = self.item_row
        return np.array([row[i] for i in items if i in row], np.int64)

    def _history_rows(self, query: Query) -> tuple[np.ndarray, np.ndarray]:
        """The catalog rows of the history the model pools (the latest ``max_history``), and their ratings."""
        max_hist, rows, ratings = int(self.meta["max_history"]), [], []
        for item, rating, _ in reversed(query.history):  # from the latest: a known user's history may be long
            row = self.item_row.get(item)
            if row is not None:
                rows.append(row)
                ratings.append(rating)
                if len(rows) == max_hist:
                    break
        return np.array(rows[::-1], np.int64), np.array(ratings[::-1], np.float64)

    def demographic_rows(self, profile: dict) -> tuple[int, int, int]:
        return (self._vocab["gender"].get(str(profile.get("gender") or ""), 0),
                self._vocab["age"].get(age_band(profile.get("age")), 0),
                self._vocab["occupation"].get(str(profile.get("occupation") or ""), 0))

    def kg_demo_vector(self, profile: dict) -> np.ndarray:
        """The mean KG vector of the profile's known demographic values (read-only: shared per combination)."""
        from recsys_tasks.kg.nodes import demographic_nodes

        nodes = tuple(n for n in demographic_nodes(profile) if n in self.bundle.kg_demo)
        vector = self._kg_means.get(nodes)  # at most one entry per combination of the KG's values
        if vector is None:
            vecs = [self.bundle.kg_demo[n] for n in nodes]
            vector = np.mean(vecs, axis=0).astype(np.float32) if vecs else np.zeros(self.meta["kg_dim"], np.float32)
            vector.flags.writeable = False
            self._kg_means[nodes] = vector
        return vector

    def text_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of sentences; unseen ones are encoded once and remembered (or asked of `sentence_encoder`)."""
        if self.sentence_encoder is not None:
            return self._text_vectors_via(self.sentence_encoder, texts)
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

    def new_sentences(self, request: dict) -> list[str]:
        """The sentences of a request whose vectors the bundle does not hold: its stated taste, and
        the profile it states (a known user's own profile sentence is in the bundle)."""
        texts = [request["text"]] if request.get("text") else []
        if request.get("profile"):
            texts.append(profile_text(profile_of(request["profile"])))
        return [t for t in texts if t not in self._text_row]

    def _text_vectors_via(self, encode: Callable[[list[str]], np.ndarray], texts: Sequence[str]) -> np.ndarray:
        unseen = [t for t in dict.fromkeys(texts) if t and t not in self._text_row]
        found = dict(zip(unseen, encode(unseen))) if unseen else {}
        out = np.zeros((len(texts), self._text_vectors.shape[1]), np.float32)
        for i, t in enumerate(texts):
            if t:
                out[i] = self._text_vectors[self._text_row[t]] if t in self._text_row else found[t]
        return out

    def _text_encoder(self):
        if self._encoder is None:
            from recsys_tasks.text.encoder import TextEncoder

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
        rows = [self._rows_of(q) for q in queries]
        histories = [r[:2] for r in rows]  # pooled by the model, cited by the reasons
        scores = (self._score(queries, histories, [r[2] for r in rows]) if queries
                  else np.zeros((0, len(self.item_ids)), np.float32))
        out = []
        for request, query, (*history, seen), row in zip(requests, queries, rows, scores):
            allowed = self._allowed(request, query, seen)
            top = _top(row, np.flatnonzero(allowed), int(request.get("k") or k))
            out.append(self._response(request, query, top, row[top], history))
        return out

    def _response(self, request: dict, query: Query, top: np.ndarray, scores: np.ndarray,
                  history: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
        """A response: the items best first, each with its score and `reasons` sentence."""
        reasons = self.explain(query, top, history)
        ids = self.item_ids
        return {"request_id": request["request_id"],
                "items": [{"item_id": ids[i], "score": s, "reason": reason}
                          for i, s, reason in zip(top.tolist(), _round6(scores), reasons)],
                "model_version": str(self.meta.get("model_version", ""))}

    def explain(self, query: Query, top: Sequence[int], history: tuple[np.ndarray, np.ndarray] | None = None
                ) -> list[str]:
        """Why each catalog row of ``top`` is recommended to ``query`` (see `reasons`); ``history``:
        the query's `_history_rows` when already known."""
        top = np.asarray(top, np.int64)
        if not len(top):
            return []
        history, ratings = history if history is not None else self._history_rows(query)
        taste = self.text_vectors([query.text])[0] if query.text else None
        return self.explainer.explain(query, history, ratings, top, self._item_arrays()[0], self.bundle.item_content, taste)

    def _allowed(self, request: dict, query: Query, seen: np.ndarray | None = None) -> np.ndarray:
        """Rows that may be recommended: the candidates (default all) less the history (``seen``: its
        rows, when known) and ``exclude``."""
        n = len(self.item_ids)
        if request.get("candidates") is not None:
            unknown = [c for c in request["candidates"] if c not in self.item_row]
            if unknown:
                raise UnknownIdError("candidates", unknown)
            allowed = np.zeros(n, bool)
            allowed[[self.item_row[c] for c in request["candidates"]]] = True
        else:
            allowed = np.ones(n, bool)
        allowed[seen if seen is not None else self._item_rows(query.history_items)] = False
        if request.get("exclude"):
            allowed[self._item_rows(request["exclude"])] = False
        return allowed

    # ------------------------------------------------------------------ catalog changes
    def upsert_items(self, items: Sequence[Mapping[str, Any]], text_vectors: np.ndarray) -> list[dict[str, str]]:
        """Add items or replace known ones, in place, without retraining.

        ``items``: catalog rows (item_id, title, year, genres "|"-joined, description, entity_id);
        ``text_vectors``: (len(items), text_dim), their `text.item_text` encoded by the bundle's
        text model. Content = text ⊕ KG, the KG part being the item's own row where the trained
        catalog has the item, else the row of the trained item linked to its ``entity_id``, else
        zeros. An added item gets the no-ID row: only the content towers score it. Only the
        changed rows' item vectors are computed. Returns, per item, its status and KG source.
        """
        import torch

        text_dim, kg_dim = int(self.meta["text_dim"]), int(self.meta["kg_dim"])
        text_vectors = np.asarray(text_vectors, np.float32).reshape(len(items), text_dim)
        catalog, content = self.bundle.catalog, self.bundle.item_content
        columns = [c for c in catalog.columns if c != "id_row"]
        latest: dict[str, tuple[dict, np.ndarray, str]] = {}  # item_id -> (row, content, KG source); last one wins
        for item, text in zip(items, text_vectors):
            item_id = str(item["item_id"])
            row = self.item_row.get(item_id)
            entity = str(item.get("entity_id") or "")
            if row is not None and row < self._n_bundle_items:
                kg, source = content[row, text_dim:], "item"
            elif entity in self._entity_rows:
                kg, source = content[self._entity_rows[entity], text_dim:], "entity"
            else:
                kg, source = np.zeros(kg_dim, np.float32), "none"
            record = {c: _catalog_value(item.get(c), catalog[c]) for c in columns} | {"item_id": item_id}
            latest[item_id] = (record, np.concatenate([text, kg]).astype(np.float32), source)
        known = [i for i in latest if i in self.item_row]
        added = [i for i in latest if i not in self.item_row]
        with torch.inference_mode():
            if known:
                rows = [self.item_row[i] for i in known]
                for i, row in zip(known, rows):
                    record, vector, _ = latest[i]
                    content[row] = vector
                    for c in columns:
                        catalog.at[row, c] = record[c]
                vecs, bias = self._item_vectors_of(content[rows], catalog.iloc[rows])
                self.item_vecs[rows], self.item_bias[rows] = vecs, bias
            if added:
                new_rows = pd.DataFrame([latest[i][0] | {"id_row": int(self.meta["n_id_items"])} for i in added])
                new_rows = new_rows[catalog.columns].astype(catalog.dtypes.to_dict())
                new_content = np.stack([latest[i][1] for i in added])
                vecs, bias = self._item_vectors_of(new_content, new_rows)
                self.bundle.catalog = pd.concat([catalog, new_rows], ignore_index=True)
                self.bundle.item_content = np.vstack([content, new_content])
                self.item_vecs, self.item_bias = torch.cat([self.item_vecs, vecs]), torch.cat([self.item_bias, bias])
                self.item_row.update({i: len(self.item_ids) + n for n, i in enumerate(added)})
                self.item_ids = self.item_ids + added
        self._arrays = self._new_text = None
        if added:
            self._known_rows.clear()
        if self.fusion is not None:  # rows added, or a known item's genres changed
            self.fusion.set_catalog(self.bundle.catalog["id_row"].to_numpy(), self.bundle.catalog["genres"].tolist())
        rows = [self.item_row[i] for i in latest]
        id_rows = self.bundle.catalog["id_row"].to_numpy()
        self.explainer.set_items(rows, [latest[i][0] for i in latest],
                                 [bool(id_rows[r] < int(self.meta["n_id_items"])) for r in rows])
        return [{"item_id": i, "status": "added" if i in added else "updated", "kg": latest[i][2]} for i in latest]

    def _item_vectors_of(self, content: np.ndarray, items: pd.DataFrame):
        """Item vectors (n, d) and biases (n,) of ``items`` (catalog rows) with ``content`` (their rows of
        it): the towers (+ the ID part), or for items without an ID the bundle's content map where it has one."""
        import torch

        id_rows = items["id_row"].to_numpy(dtype=np.int64, copy=True)  # a copy: torch wants a writable array
        with torch.inference_mode():
            vecs, bias = self.model.items(torch.as_tensor(np.ascontiguousarray(content, np.float32), device=self.device),
                                          torch.as_tensor(id_rows, device=self.device))
            new = np.flatnonzero(id_rows >= int(self.meta["n_id_items"]))
            content_map = self.bundle.content_map
            if content_map is not None and len(new):
                mapped_vecs, mapped_bias = content_map(np.asarray(content)[new, :content_map.text_dim], items.iloc[new])
                rows = torch.as_tensor(new, device=self.device)
                vecs[rows] = torch.as_tensor(mapped_vecs, dtype=vecs.dtype, device=self.device)
                bias[rows] = torch.as_tensor(mapped_bias, dtype=bias.dtype, device=self.device)
        return vecs, bias

    def indexed_rows(self) -> np.ndarray:
        """The catalog rows a vector index for `recommend_with_index` holds: every row, or with a fusion
        only the rows without an ID (the fused ones are scored exactly: the index knows only u·v + b)."""
        if self.fusion is None:
            return np.arange(len(self.item_ids), dtype=np.int64)
        return np.flatnonzero(self.bundle.catalog["id_row"].to_numpy() >= int(self.meta["n_id_items"]))

    def recommend_with_index(self, index, requests: Sequence[dict], k: int = 20) -> list[dict]:
        """`recommend`, with the catalog ranked by ``index.search(users, n)`` (top-n rows by u·v + b,
        e.g. `index.ItemIndex` over `indexed_rows`) instead of scoring every item; ``candidates``, and
        with a fusion the items with an ID, are scored exactly."""
        queries = [self.query_for(r) for r in requests]
        if not queries:
            return []
        histories = [self._history_rows(q) for q in queries]
        users = self._user_vectors(queries, histories)
        blocked = [{self.item_row[i] for i in (*q.history_items, *(r.get("exclude") or [])) if i in self.item_row}
                   for r, q in zip(requests, queries)]
        sizes = [int(r.get("k") or k) for r in requests]
        free = [i for i, r in enumerate(requests) if r.get("candidates") is None]
        searched = users if self._profile_columns() is None else np.hstack([users, self.text_profiles(histories)])
        found = {}
        if free:
            scores, rows = index.search(searched[free], max(sizes[i] + len(blocked[i]) for i in free))
            found = dict(zip(free, zip(scores, rows)))
        vecs, bias = self._item_arrays()
        fused = None  # (b, len(id_cols)): the fusion's terms of the rows with an ID
        if self.fusion is not None:
            fused = self.fusion.id_scores(queries, [self._item_rows(q.history_items) for q in queries],
                                          self._fusion_keys(queries), self._named_genres(queries))
            id_cols = self.fusion.id_cols
            id_position = np.full(len(self.item_ids), -1, np.int64)
            id_position[id_cols] = np.arange(len(id_cols))
        out = []
        for i, request in enumerate(requests):
            if i in found:
                pairs = [(s, r) for s, r in zip(*found[i]) if r >= 0 and r not in blocked[i]][:sizes[i]]
                if fused is not None:  # merged with the exact, fused scores of the rows with an ID
                    exact = vecs[id_cols] @ users[i] + bias[id_cols] + fused[i]
                    allowed = np.array([c not in blocked[i] for c in id_cols.tolist()], bool)
                    pairs += [(exact[j], id_cols[j]) for j in _top(exact, np.flatnonzero(allowed), sizes[i])]
                    pairs = sorted(pairs, key=lambda p: (-p[0], p[1]))[:sizes[i]]
            else:
                unknown = [c for c in request["candidates"] if c not in self.item_row]
                if unknown:
                    raise UnknownIdError("candidates", unknown)
                rows = np.array(sorted({self.item_row[c] for c in request["candidates"]} - blocked[i]), np.int64)
                candidate_vecs, candidate_bias = self.index_arrays(rows)
                exact = candidate_vecs @ searched[i] + candidate_bias
                if fused is not None:
                    at = id_position[rows]
                    exact[at >= 0] += fused[i][at[at >= 0]]
                pairs = [(exact[j], rows[j]) for j in _top(exact, np.arange(len(rows)), sizes[i])]
            out.append(self._response(request, queries[i], np.array([r for _, r in pairs], np.int64),
                                      np.array([s for s, _ in pairs], np.float32), histories[i]))
        return out

    def similar_items(self, item_id: str, k: int = 20) -> list[dict[str, Any]]:
        """The ``k`` items whose vectors are closest to ``item_id``'s (cosine), best first, itself left out."""
        import torch

        row = self.item_row.get(str(item_id))
        if row is None:
            raise UnknownIdError("item_id", [str(item_id)])
        with torch.inference_mode():
            unit = torch.nn.functional.normalize(self.item_vecs.float(), dim=-1)
            scores = (unit @ unit[row]).cpu().numpy()
        others = np.flatnonzero(np.arange(len(scores)) != row)
        return [{"item_id": self.item_ids[i], "score": round(float(scores[i]), 6)} for i in _top(scores, others, k)]


def _catalog_value(value: Any, column: pd.Series) -> Any:
    """A value for a catalog cell: missing strings are "", missing numbers NA (the snapshot's convention)."""
    if value is None:
        return "" if pd.api.types.is_string_dtype(column) else pd.NA
    return value


def _round6(scores: np.ndarray) -> list[float]:
    """``[round(float(s), 6) for s in scores]`` for float32 scores, in one vectorised pass: s·10⁶ is
    exact in float64 (a float32 has 24 significant bits, 10⁶ = 2⁶·15625 adds 14), so rounding it half
    to even is Python's correctly rounded ``round``."""
    return (np.rint(np.asarray(scores, np.float32).astype(np.float64) * 1e6) / 1e6).tolist()


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.flags.writeable = False
    return arrays


def _top(scores: np.ndarray, idx: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` best of the rows ``idx`` (ascending), best first, ties in row order: what a stable
    argsort gives, in O(len(idx)) (a partition first) rather than O(len log len) on big catalogs."""
    s = scores[idx]
    if n < len(idx):
        kth = np.partition(s, len(s) - n)[len(s) - n]  # the n-th largest score
        keep = np.flatnonzero(s >= kth)  # every tie of it too, so the cut below is the stable one
        idx, s = idx[keep], s[keep]
    return idx[np.lexsort((idx, -s))[:n]]

"""The trained model with everything it needs to answer a query: a `Bundle` and its weights.

`Recommender` answers requests (`recommend`, `recommend_with_index`) and scores queries (`score`,
a `Scorer`) by putting together the parts, each in its own module:
- `bundle`: the directory that training writes and serving reads (load/save);
- `adapter`: request dicts into queries and catalog rows (known users bring profile and history);
- `sentences`: the vectors of profile and taste sentences, unseen ones encoded on first use;
- `scoring`: the towers' user and item vectors, u·v + b, the content map's profile term;
- `fusion`: the prior and EASE added to the model's scores, where the bundle has them;
- `candidates`: the rows a request may get (candidates less history and ``exclude``), the best of them;
- `explanations`: the reason of each recommended item, and the response schema;
- `intent`: a request's text as hard constraints (genres, genres to avoid, years: they gate the rows,
  relaxed in turn where too few fit) and soft preferences (reference items, free text: they add to the
  scores); the fused scores rank within them, in `recommend`, `recommend_with_index` and `score` alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recsys_tasks.explain.reasons import Explainer
from recsys_tasks.intent.gate import NEVER, Tiers
from recsys_tasks.intent.parse import Intent
from recsys_tasks.intent.reader import IntentReader, SoftWeights
from recsys_tasks.model.adapter import RequestAdapter
from recsys_tasks.model.bundle import Bundle, encoder_path
from recsys_tasks.model.candidates import UnknownIdError, allowed, candidate_rows, top
from recsys_tasks.model.content_map import ContentMap
from recsys_tasks.model.explanations import explainer_for, response
from recsys_tasks.model.scoring import History, Scoring
from recsys_tasks.model.sentences import Sentences
from recsys_tasks.protocol.queries import Query

if TYPE_CHECKING:
    from recsys_tasks.model.fusion import Fusion

__all__ = ["Bundle", "Recommender", "UnknownIdError"]


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
        self._n_bundle_items = len(self.item_ids)  # rows the KG stage knew; later rows were added
        linked = bundle.catalog["entity_id"].fillna("").astype(str) if "entity_id" in bundle.catalog else []
        self._entity_rows = {e: i for i, e in enumerate(linked) if e}  # KG entity -> the trained item linked to it
        self.sentences = Sentences(bundle.texts, bundle.text_vectors, encoder_path(self.meta), self.device.type)
        self.requests = _request_adapter(bundle, self.item_row)
        self.explainer = _explainer(bundle)  # KG links and training popularity, looked up per recommended item
        self.fusion: Fusion | None = None
        self.set_fusion(bundle.fusion, bundle.ease)
        self.scoring = Scoring(bundle, model, self.device, self.sentences)
        self.intents = IntentReader(bundle.catalog, weights=SoftWeights.from_meta(bundle.meta.get("intent_weights")))
        self.intent_gate = True  # False: a request's text reaches only the model and the fusion (before `intent`)
        self._unit: tuple[np.ndarray | None, np.ndarray] = (None, np.zeros((0, 0), np.float32))

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> Recommender:
        """A saved bundle with its weights (``model.pt``, read with ``weights_only=True``)."""
        from recsys_tasks.model.hybrid import load_model

        return cls(Bundle.load(directory), load_model(Path(directory) / "model.pt", device), device)

    # ------------------------------------------------------------------ what serves
    def set_fusion(self, meta: dict | None, ease: np.ndarray | None, fusion: Fusion | None = None) -> None:
        """Fuse the model's scores with a tuned prior and EASE (`fusion`); None: the model alone.
        ``fusion``: the `fusion.Fusion` ``meta`` describes, where the caller has built it already."""
        from recsys_tasks.model.fusion import Fusion

        self.bundle.fusion, self.bundle.ease = meta, ease
        if fusion is None and meta is not None and self.bundle.prior is not None:
            fusion = _saved_fusion(meta, ease, self.bundle)
        self.fusion = (
            fusion
            if fusion is not None or meta is None
            else Fusion.from_meta(
                meta,
                ease,
                self.bundle.catalog,
                self.bundle.histories,
                self.bundle.users,
                int(self.meta["n_id_items"]),
                float(self.meta.get("positive_threshold", 4.0)),
            )
        )

    def set_content_map(self, content_map: ContentMap | None) -> None:
        """Serve items without an ID with ``content_map`` (None: with the content towers)."""
        self.bundle.content_map = content_map
        self.refresh()

    def refresh(self) -> None:
        """Recompute the item vectors (after training steps, or after the catalog changed)."""
        self.scoring.refresh()

    @property
    def item_vecs(self):
        """(n_items, d) torch tensor: every catalog item's vector (`scoring`)."""
        return self.scoring.item_vecs

    @property
    def item_bias(self):
        """(n_items,) torch tensor: every catalog item's bias."""
        return self.scoring.item_bias

    @property
    def sentence_encoder(self) -> Callable[[list[str]], np.ndarray] | None:
        """Where set (the API sets a bounded, shared cache), unseen sentences are looked up there
        instead of being encoded here and remembered for ever."""
        return self.sentences.external

    @sentence_encoder.setter
    def sentence_encoder(self, encode: Callable[[list[str]], np.ndarray] | None) -> None:
        self.sentences.external = encode

    # ------------------------------------------------------------------ scoring
    def score(self, queries: Sequence[Query], fused: bool = True) -> np.ndarray:
        """(n_queries, n_items) float32 scores over the catalog, in catalog order (``fused=False``:
        the model's own, without the fusion's terms: what the fusion is tuned on)."""
        if not queries:
            return np.zeros((0, len(self.item_ids)), np.float32)
        return self._score(
            queries,
            [self._history_rows(q) for q in queries],
            [self._item_rows(q.history_items) for q in queries],
            fused,
        )

    def _score(
        self, queries: Sequence[Query], histories: Sequence[History], seen: Sequence[np.ndarray], fused: bool = True
    ) -> np.ndarray:
        """Scores (b, n_items): the model's, plus the fusion's terms; ``histories``: `_history_rows`
        (what the model pools), ``seen``: the rows of each whole history (what EASE sums)."""
        return self._scored(queries, histories, seen, fused)[0]

    def _scored(
        self, queries: Sequence[Query], histories: Sequence[History], seen: Sequence[np.ndarray], fused: bool = True
    ) -> tuple[np.ndarray, list[tuple[Intent, Tiers] | None]]:
        """`_score`, and per query its intent and tiers (None where its text asks nothing or ``fused`` is
        False): the scores are then ranked by (tier, score + soft terms) (`intent.reader`)."""
        scores = self.scoring.scores(self._user_vectors(queries, histories), histories)
        if fused and self.fusion is not None:
            self.fusion.add(scores, queries, seen, self.requests.fusion_keys(queries), self._named_genres(queries))
        intents: list[tuple[Intent, Tiers] | None] = [None] * len(queries)
        if fused:
            for q_i, query in enumerate(queries):
                intent = self.intent_of(query)
                if intent is not None:
                    scores[q_i], found = self._intent_scores(intent, scores[q_i], str(query.text))
                    intents[q_i] = (intent, found)
        return scores, intents

    def intent_of(self, query: Query) -> Intent | None:
        """What the query's text asks for (`intent.parse`) where it changes the ranking; None without
        text, with the gate off, or where the parse gates nothing and adds nothing (a stated taste alone)."""
        if not self.intent_gate or not query.text:
            return None
        intent = self.intents.parse(query.text)
        return intent if self.intents.changes_ranking(intent) else None

    def _intent_scores(self, intent: Intent, scores: np.ndarray, text: str) -> tuple[np.ndarray, Tiers]:
        """One dense score row ranked by (tier, score + soft terms), and its tiers; ``text``: the request's
        whole sentence, whose vector (the model's input too: encoded once) stands for its free text."""
        text_dim = int(self.meta["text_dim"])
        return self.intents.adjust(
            intent,
            scores,
            self._unit_item_vectors,
            lambda _free_text: self.text_vectors([text])[0],
            self.explainer.taste_z,
            self.bundle.item_content[:, :text_dim],
        )

    def _unit_item_vectors(self) -> np.ndarray:
        """Every item's model vector centred on the trained items' mean, unit length (until the vectors change)."""
        vecs = self._item_arrays()[0]
        if self._unit[0] is not vecs:
            trained = vecs[self.bundle.catalog["id_row"].to_numpy()[: len(vecs)] < int(self.meta["n_id_items"])]
            centred = vecs - (trained.mean(0) if len(trained) else 0.0)
            unit = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
            self._unit = (vecs, unit.astype(np.float32))
        return self._unit[1]

    def _named_genres(self, queries: Sequence[Query]) -> list[set[str]] | None:
        """Per query the genres its stated taste names (the fusion's taste term), None where it has no such term."""
        if self.fusion is None or not self.fusion.weights.taste:
            return None
        return [set(self.explainer.taste_genres(q.text)) if q.text else set() for q in queries]

    # The parts' answers that training (`finetune`) and tests ask the recommender for.
    def _user_vectors(self, queries: Sequence[Query], histories: Sequence[History]) -> np.ndarray:
        return self.scoring.user_vectors(queries, histories)

    def _item_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.scoring.item_arrays()

    def _history_rows(self, query: Query) -> History:
        return self.requests.history_rows(query)

    def _item_rows(self, items: Sequence[str]) -> np.ndarray:
        return self.requests.item_rows(items)

    def liked_text(self, histories: Sequence[History]) -> np.ndarray:
        return self.scoring.liked_text(histories)

    def text_profiles(self, histories: Sequence[History]) -> np.ndarray:
        return self.scoring.text_profiles(histories)

    def index_arrays(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, biases) of catalog ``rows`` for a vector index (`recommend_with_index`; `Scoring.index_arrays`)."""
        return self.scoring.index_arrays(rows)

    def demographic_rows(self, profile: dict) -> tuple[int, int, int]:
        return self.scoring.demographic_rows(profile)

    def kg_demo_vector(self, profile: dict) -> np.ndarray:
        return self.scoring.kg_demo_vector(profile)

    def text_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of sentences; unseen ones are encoded once and remembered (or asked of `sentence_encoder`)."""
        return self.sentences.vectors(texts)

    # ------------------------------------------------------------------ requests
    def query_for(self, request: dict) -> Query:
        """A `Query` from a validated request: a known user_id brings its profile and history."""
        return self.requests.query_for(request)

    def new_sentences(self, request: dict) -> list[str]:
        """The sentences of a request whose vectors the bundle does not hold: its stated taste, and
        the profile it states (a known user's own profile sentence is in the bundle)."""
        return self.sentences.unseen(self.requests.sentences_of(request))

    def recommend(self, requests: Sequence[dict], k: int = 20) -> list[dict]:
        """Responses in the CLI/API schema, best first; seen items and ``exclude`` are left out."""
        queries = [self.query_for(r) for r in requests]
        rows = [self.requests.rows_of(q) for q in queries]
        histories = [r[:2] for r in rows]  # pooled by the model, cited by the reasons
        scores, intents = (
            self._scored(queries, histories, [r[2] for r in rows])
            if queries
            else (np.zeros((0, len(self.item_ids)), np.float32), [])
        )
        out = []
        for request, query, (pooled, ratings, seen), row, parsed in zip(requests, queries, rows, scores, intents):
            mask = allowed(len(self.item_ids), self.item_row, request, seen)
            intent = None
            if parsed is not None:
                intent, found = parsed
                mask[self.intents.like_rows(intent)] = False  # "like Toy Story" is not answered with Toy Story
                mask &= found.tier != NEVER
            best = top(row, np.flatnonzero(mask), int(request.get("k") or k))
            if parsed is not None:
                intent = self.intents.with_relaxed(parsed[0], parsed[1], best, mask)
            out.append(self._response(request, query, best, row[best], (pooled, ratings), intent))
        return out

    def indexed_rows(self) -> np.ndarray:
        """The catalog rows a vector index for `recommend_with_index` holds: every row, or with a fusion
        only the rows without an ID (the fused ones are scored exactly: the index knows only u·v + b)."""
        if self.fusion is None:
            return np.arange(len(self.item_ids), dtype=np.int64)
        return np.flatnonzero(self.bundle.catalog["id_row"].to_numpy() >= int(self.meta["n_id_items"]))

    def recommend_with_index(self, index, requests: Sequence[dict], k: int = 20) -> list[dict]:
        """`recommend`, with the catalog ranked by ``index.search(users, n)`` (top-n rows by u·v + b,
        e.g. `index.ItemIndex` over `indexed_rows`) instead of scoring every item; ``candidates``, and
        with a fusion the items with an ID, are scored exactly; so is every item for a request whose text
        asks for something (`intent_of`: its constraints choose the rows, not the index's top n)."""
        queries = [self.query_for(r) for r in requests]
        if not queries:
            return []
        gated = [i for i, q in enumerate(queries) if self.intent_of(q) is not None]
        exact_answers = dict(zip(gated, self.recommend([requests[i] for i in gated], k))) if gated else {}
        histories = [self._history_rows(q) for q in queries]
        users = self._user_vectors(queries, histories)
        blocked = [
            {self.item_row[i] for i in (*q.history_items, *(r.get("exclude") or [])) if i in self.item_row}
            for r, q in zip(requests, queries)
        ]
        sizes = [int(r.get("k") or k) for r in requests]
        free = [i for i, r in enumerate(requests) if r.get("candidates") is None and i not in exact_answers]
        profile = self.scoring.profile_columns()
        searched = users if profile is None else np.hstack([users, self.text_profiles(histories)])
        found = {}
        if free:
            scores, rows = index.search(searched[free], max(sizes[i] + len(blocked[i]) for i in free))
            found = dict(zip(free, zip(scores, rows)))
        vecs, bias = self._item_arrays()
        fused = None  # (b, len(id_cols)): the fusion's terms of the rows with an ID
        if self.fusion is not None:
            fused = self.fusion.id_scores(
                queries,
                [self._item_rows(q.history_items) for q in queries],
                self.requests.fusion_keys(queries),
                self._named_genres(queries),
            )
            id_cols = self.fusion.id_cols
            id_position = np.full(len(self.item_ids), -1, np.int64)
            id_position[id_cols] = np.arange(len(id_cols))
        out = []
        for i, request in enumerate(requests):
            if i in exact_answers:
                out.append(exact_answers[i])
                continue
            if i in found:
                pairs = [(s, r) for s, r in zip(*found[i]) if r >= 0 and r not in blocked[i]][: sizes[i]]
                if fused is not None:  # merged with the exact, fused scores of the rows with an ID
                    exact = vecs[id_cols] @ users[i] + bias[id_cols] + fused[i]
                    mask = np.array([c not in blocked[i] for c in id_cols.tolist()], bool)
                    pairs += [(exact[j], id_cols[j]) for j in top(exact, np.flatnonzero(mask), sizes[i])]
                    pairs = sorted(pairs, key=lambda p: (-p[0], p[1]))[: sizes[i]]
            else:
                rows = np.array(
                    sorted(set(candidate_rows(self.item_row, request["candidates"])) - blocked[i]), np.int64
                )
                candidate_vecs, candidate_bias = self.index_arrays(rows)
                exact = candidate_vecs @ searched[i] + candidate_bias
                if fused is not None:
                    at = id_position[rows]
                    exact[at >= 0] += fused[i][at[at >= 0]]
                pairs = [(exact[j], rows[j]) for j in top(exact, np.arange(len(rows)), sizes[i])]
            out.append(
                self._response(
                    request,
                    queries[i],
                    np.array([r for _, r in pairs], np.int64),
                    np.array([s for s, _ in pairs], np.float32),
                    histories[i],
                )
            )
        return out

    def similar_items(self, item_id: str, k: int = 20) -> list[dict[str, Any]]:
        """The ``k`` items whose vectors are closest to ``item_id``'s (cosine), best first, itself left out."""
        row = self.item_row.get(str(item_id))
        if row is None:
            raise UnknownIdError("item_id", [str(item_id)])
        scores = self.scoring.similarities(row)
        others = np.flatnonzero(np.arange(len(scores)) != row)
        return [{"item_id": self.item_ids[i], "score": round(float(scores[i]), 6)} for i in top(scores, others, k)]

    # ------------------------------------------------------------------ reasons
    def explain(
        self,
        query: Query,
        top: Sequence[int] | np.ndarray,
        history: History | None = None,
        intent: Intent | None = None,
    ) -> list[str]:
        """Why each catalog row of ``top`` is recommended to ``query`` (see `reasons`); ``history``:
        the query's `_history_rows` when already known; ``intent``: its text's parse, whose genres
        (synonyms too: "matches 'scary'") and reference items ("similar to Toy Story") the reasons may name."""
        top_rows = np.asarray(top, np.int64)
        if not len(top_rows):
            return []
        pooled, ratings = history if history is not None else self._history_rows(query)
        taste = self.text_vectors([query.text])[0] if query.text else None
        named = None
        if intent is not None:
            like = self.intents.like_rows(intent)
            if len(like):  # the items the request names count as liked ones (rating 0: a click)
                pooled = np.concatenate([np.asarray(pooled, np.int64), like])
                ratings = np.concatenate([np.asarray(ratings, np.float32), np.zeros(len(like), np.float32)])
            named = intent.phrases
        return self.explainer.explain(
            query, pooled, ratings, top_rows, self._item_arrays()[0], self.bundle.item_content, taste, named
        )

    def _response(
        self,
        request: dict,
        query: Query,
        best: np.ndarray,
        scores: np.ndarray,
        history: History | None = None,
        intent: Intent | None = None,
    ) -> dict:
        """A response: the items best first, each with its score, `reasons` sentence, title, year and
        genres; with the parse of the request's text (`intent`), where it has text."""
        if intent is None and query.text and self.intent_gate:
            intent = self.intents.parse(query.text)  # an empty parse: shown, so what was understood is seen
        return response(
            request,
            self.item_ids,
            best,
            scores,
            self.explain(query, best, history, intent),
            str(self.meta.get("model_version", "")),
            self.bundle.catalog,
            intent.to_dict() if intent is not None else None,
        )

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
        catalog, content, scoring = self.bundle.catalog, self.bundle.item_content, self.scoring
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
                vecs, bias = scoring.item_vectors_of(content[rows], catalog.iloc[rows])
                scoring.item_vecs[rows], scoring.item_bias[rows] = vecs, bias
            if added:
                new_rows = pd.DataFrame([latest[i][0] | {"id_row": int(self.meta["n_id_items"])} for i in added])
                new_rows = new_rows[catalog.columns].astype(catalog.dtypes.to_dict())
                new_content = np.stack([latest[i][1] for i in added])
                vecs, bias = scoring.item_vectors_of(new_content, new_rows)
                self.bundle.catalog = pd.concat([catalog, new_rows], ignore_index=True)
                self.bundle.item_content = np.vstack([content, new_content])
                scoring.item_vecs = torch.cat([scoring.item_vecs, vecs])
                scoring.item_bias = torch.cat([scoring.item_bias, bias])
                self.item_row.update({i: len(self.item_ids) + n for n, i in enumerate(added)})
                self.item_ids = self.item_ids + added
        scoring.catalog_changed()
        self.intents.set_catalog(self.bundle.catalog)
        if added:
            self.requests.items_added()
        if self.fusion is not None:  # rows added, or a known item's genres changed
            self.fusion.set_catalog(self.bundle.catalog["id_row"].to_numpy(), self.bundle.catalog["genres"].tolist())
        rows = [self.item_row[i] for i in latest]
        id_rows = self.bundle.catalog["id_row"].to_numpy()
        self.explainer.set_items(
            rows, [latest[i][0] for i in latest], [bool(id_rows[r] < int(self.meta["n_id_items"])) for r in rows]
        )
        return [{"item_id": i, "status": "added" if i in added else "updated", "kg": latest[i][2]} for i in latest]


def _request_adapter(bundle: Bundle, item_row: dict[str, int]) -> RequestAdapter:
    """The adapter over the bundle's known users; with a saved `HistoryIndex` their histories are
    looked up in it per request instead of being grouped from the whole histories table here."""
    if bundle.history_index is None:
        return RequestAdapter(bundle.users, bundle.histories, item_row, bundle.meta["max_history"])
    empty = pd.DataFrame({"user_id": [], "item_id": [], "rating": [], "timestamp": []})
    adapter = RequestAdapter(bundle.users, empty, item_row, bundle.meta["max_history"])
    # a Mapping is all the adapter needs (it only asks .get(user_id)); its constructor takes a frame to group
    adapter.histories = bundle.history_index  # type: ignore[assignment]
    return adapter


def _explainer(bundle: Bundle) -> Explainer:
    """`explainer_for`, with the segments' most liked items the bundle saved where it has them."""
    if bundle.popular is None:
        return explainer_for(bundle)
    meta = bundle.meta
    return Explainer(
        bundle.catalog,
        bundle.item_content,
        bundle.item_links,
        bundle.popular,
        meta["n_id_items"],
        meta["text_dim"],
        float(meta.get("positive_threshold", 4.0)),
    )


def _saved_fusion(meta: dict, ease: np.ndarray | None, bundle: Bundle) -> Fusion:
    """`Fusion.from_meta` with the prior the bundle saved (`SavedPopularity`) instead of one recounted."""
    from recsys_tasks.model.fusion import Fusion, FusionWeights

    assert bundle.prior is not None, "only for a bundle with a saved prior"
    w = meta["weights"]
    weights = FusionWeights(tuple(w["prior"]), tuple(w["ease"]), tuple(w["edges"]), float(w.get("taste", 0.0)))
    catalog = bundle.catalog
    genres = catalog["genres"].tolist() if "genres" in catalog else None
    return Fusion(weights, ease, bundle.prior, catalog["id_row"].to_numpy(), int(bundle.meta["n_id_items"]), genres)


def _catalog_value(value: Any, column: pd.Series) -> Any:
    """A value for a catalog cell: missing strings are "", missing numbers NA (the snapshot's convention)."""
    if value is None:
        return "" if pd.api.types.is_string_dtype(column) else pd.NA
    return value

"""`ModelHolder`: the model being served, the items added to it, and the threads that touch it.

The holder follows ``models:/<name>@champion``: a thread polls the alias, builds the new
`Recommender` completely (catalog additions replayed), then replaces one reference, so a request
is answered by the old model or the new one, never a mix. Scoring, catalog additions, swaps and
similar-item lookups run on one model thread, behind one lock; new sentences are encoded on
``text_lanes`` threads of their own, behind an LRU cache (`SentenceCache`). Models are loaded
only from the configured registry and model name (`registry.store`, read side).

With ``challenger_share`` > 0 the holder also follows ``@challenger`` the same way and answers the
share of users that `variants.variant_of` assigns to it with that version; every response is tagged
with its ``variant``. A challenger alias that is missing or fails to load sends everything to the
champion (`challenger_state` says why; ``/health`` shows it): no request fails for it.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from recsys_tasks.ingest.added import ADDED_RUN_META, added_run, apply_added_items
from recsys_tasks.model.bundle import encoder_path
from recsys_tasks.model.index import IndexConfig, ItemIndex, faiss_available
from recsys_tasks.model.recommender import Recommender, UnknownIdError
from recsys_tasks.serving.catalog import CatalogLog, LogPosition
from recsys_tasks.serving.sentences import SentenceCache
from recsys_tasks.serving.settings import ServeSettings
from recsys_tasks.serving.variants import CHALLENGER, CHAMPION, ExposureLog, ServedCounts, variant_of

__all__ = ["CatalogFullError", "ModelHolder", "Served"]

log = logging.getLogger(__name__)


class CatalogFullError(ValueError):
    """A POST /items would take the added items past ``max_added_items``."""


@dataclass(frozen=True)
class Served:
    """One loaded model version: replaced as a whole, never changed in place but by the model thread."""

    recommender: Recommender
    model_name: str
    version: str
    uri: str
    loaded_at: float
    index: ItemIndex | None = None  # ranks the catalog instead of an exact product (big catalogs)

    @property
    def sentence_cache(self) -> SentenceCache:
        """The recommender's sentence encoder: the `SentenceCache` the holder gave it (`ModelHolder._with_cache`)."""
        cache = self.recommender.sentence_encoder
        assert isinstance(cache, SentenceCache), "the holder gives every recommender it serves its SentenceCache"
        return cache


class ModelHolder:
    """The model being served, its catalog additions, and the one thread that touches it."""

    def __init__(self, settings: ServeSettings, recommender: Recommender | None = None):
        self.settings = settings
        if settings.torch_threads > 0:  # on a busy 2-core machine, idle OpenMP threads spin against the server
            import torch

            torch.set_num_threads(settings.torch_threads)
            if faiss_available():
                import faiss

                faiss.omp_set_num_threads(settings.torch_threads)
        self._caches: dict[str, SentenceCache] = {}
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="recsys-model")
        self._lock = threading.RLock()  # the served model: a batch, a swap, an addition, one at a time
        self.text_threads = ThreadPoolExecutor(max(1, settings.text_lanes), thread_name_prefix="recsys-text")
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.last_poll: dict[str, Any] = {"at": None, "error": None}
        self.challenger: Served | None = None  # answers the challenger's share while it is loaded
        self.challenger_state: dict[str, Any] = {"state": "off", "version": None, "error": None}
        self.counts = ServedCounts()
        self.exposures = (
            ExposureLog(settings.exposure_log, settings.exposure_log_max_bytes, settings.exposure_log_backups)
            if settings.exposure_log
            else None
        )
        self.alias = _followed_alias(settings.model_uri)
        if settings.model_uri and self.alias:
            self.settings = replace(settings, model_name=settings.model_uri[len("models:/") :].split("@", 1)[0])
        self.catalog = CatalogLog(settings.root() / "serving" / _safe(self.settings.model_name) / "items.jsonl")
        self.catalog.compact()  # one line per added item, before anything reads the log
        if recommender is not None:  # a model built elsewhere (benchmarks): served as is, not polled
            self.alias = None
            self.served = self._served(self._with_cache(recommender), "given")
        elif self.alias:
            self.served, _ = self._build(f"models:/{self.settings.model_name}/{self._champion_version()}")
        else:
            self.served, _ = self._build(str(settings.model_uri))
        if settings.challenger_share > 0:
            if self.alias is None:
                self.challenger_state["error"] = "a fixed model is served (no alias followed): no challenger"
            else:
                self._poll_challenger()
        _freeze()

    # ---------------------------------------------------------------- loading and swapping
    def _challenger_version(self) -> str | None:
        from recsys_tasks.registry.store import alias_version

        return alias_version(self.settings.model_name, CHALLENGER, self.settings.store())

    def _champion_version(self) -> str:
        from recsys_tasks.registry.store import ModelNotFoundError, alias_version

        assert self.alias is not None, "only a holder that follows an alias asks for its version"
        version = alias_version(self.settings.model_name, self.alias, self.settings.store())
        if version is None:
            raise ModelNotFoundError(
                f"cannot load model 'models:/{self.settings.model_name}@{self.alias}': "
                f"no such model or alias in {self.settings.store()}"
            )
        return version

    def _added_run(self, version: str) -> str:
        """The run holding the version's ingested items now (`ingest.added`): a new one reloads the version."""
        return added_run(self.settings.model_name, version, self.settings.store())

    def _build(self, uri: str) -> tuple[Served, LogPosition]:
        """Load a version and replay the catalog log onto it, off the model thread."""
        from recsys_tasks.registry.store import load_recommender, store_errors

        with store_errors(self.settings.store(), f"loading {uri}"):  # a broken store: `StoreError` naming it
            loaded = load_recommender(uri, uri=self.settings.store())
        apply_added_items(loaded, uri, self.settings.store())  # items ingested since its training (`ingest`)
        recommender = self._with_cache(loaded)
        entries, position = self.catalog.read()
        self._replay(Served(recommender, self.settings.model_name, "", uri, 0.0), entries)
        return self._served(recommender, uri), position

    def _with_cache(self, recommender: Recommender) -> Recommender:
        text_model = recommender.meta["text_model"]
        if text_model not in self._caches:
            settings = self.settings
            self._caches[text_model] = SentenceCache(
                text_model,
                settings.sentence_cache_size,
                settings.text_lanes,
                settings.text_runtime,
                settings.onnx_folder(),
                max(1, settings.torch_threads),
                path=encoder_path(recommender.meta),
            )
        recommender.sentence_encoder = self._caches[text_model]
        return recommender

    def _served(self, recommender: Recommender, uri: str) -> Served:
        """The version ready to serve, with a vector index where the catalog calls for one."""
        index, mode = None, self.settings.index
        n = len(recommender.item_ids)
        if mode == "faiss" or (mode == "auto" and n >= self.settings.index_min_items):
            rows = recommender.indexed_rows()  # with a fusion, the rows with an ID are scored exactly
            if not faiss_available():
                log.warning("%d items but faiss is not installed: every request scores the whole catalog", n)
            elif len(rows):  # (none left to index: the exact product serves)
                index = ItemIndex(*recommender.index_arrays(rows), IndexConfig(nprobe=self.settings.index_nprobe), rows)
        return Served(
            recommender,
            self.settings.model_name,
            str(recommender.meta.get("model_version", "")),
            uri,
            time.time(),
            index,
        )

    def _apply(self, served: Served, items: list[dict[str, Any]], vectors: np.ndarray) -> list[dict[str, str]]:
        """Add or replace items in a version (and its index)."""
        recommender = served.recommender
        report = recommender.upsert_items(items, vectors)
        if served.index is not None:
            rows = np.array([recommender.item_row[r["item_id"]] for r in report], np.int64)
            rows = np.intersect1d(rows, recommender.indexed_rows())
            served.index.upsert(rows, *recommender.index_arrays(rows))
        return report

    def _replay(self, served: Served, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        recommender, cache = served.recommender, served.sentence_cache
        same = [
            e["text_model"] == cache.text_model and len(e["vector"]) == recommender.meta["text_dim"] for e in entries
        ]
        vectors = np.zeros((len(entries), int(recommender.meta["text_dim"])), np.float32)
        if all(same):
            vectors[:] = np.stack([e["vector"] for e in entries])
        else:  # another text model: encode the item texts again
            from recsys_tasks.text.texts import item_text

            vectors[:] = cache.encode([item_text(e["item"]) for e in entries])
        self._apply(served, [e["item"] for e in entries], vectors)

    def poll_once(self) -> bool:
        """Check the alias; when it has moved, load the new version and swap. True if swapped."""
        if self.alias is None:
            return False
        if self.settings.challenger_share > 0:
            self._poll_challenger()
        try:
            version = self._champion_version()
            if version == self.served.version and self._added_run(version) == self.served.recommender.meta.get(
                ADDED_RUN_META, ""
            ):  # same version, same ingested items
                self.last_poll = {"at": time.time(), "error": None}
                return False
            served, position = self._build(f"models:/{self.settings.model_name}/{version}")
            self.run(self._swap, served, position).result()
            self.last_poll = {"at": time.time(), "error": None}
            log.info("now serving %s version %s", served.model_name, served.version)
            return True
        except Exception as exc:  # keep serving the old model; /health tells
            log.exception("polling the registry failed")
            self.last_poll = {"at": time.time(), "error": f"{type(exc).__name__}: {exc}"}
            return False

    def _poll_challenger(self) -> None:
        """Follow ``@challenger``: load a new version, drop a removed one; any failure leaves the
        champion answering everyone (the state says why), never an exception."""
        try:
            version = self._challenger_version()
        except Exception as exc:  # a store that cannot be read: keep what is served
            log.warning("reading the challenger alias failed: %s", exc)
            state = "serving" if self.challenger is not None else "failed"
            self.challenger_state = {**self.challenger_state, "state": state, "error": f"{type(exc).__name__}: {exc}"}
            return
        if version is None:
            if self.challenger_state["state"] != "missing":
                log.warning("no %s alias on %s: the champion answers everyone", CHALLENGER, self.settings.model_name)
            if self.challenger is not None:
                self.run(self._swap_challenger, None, None).result()
            self.challenger_state = {
                "state": "missing",
                "version": None,
                "error": f"no {CHALLENGER!r} alias on registered model {self.settings.model_name!r}",
            }
            return
        if self.challenger is not None and self.challenger.version == version:
            return
        if self.challenger_state["state"] == "failed" and self.challenger_state["version"] == version:
            return  # tried and failed: not reloaded at every poll (a new version is tried)
        try:
            served, position = self._build(f"models:/{self.settings.model_name}/{version}")
            self.run(self._swap_challenger, served, position).result()
            self.challenger_state = {"state": "serving", "version": version, "error": None}
            log.info("challenger: now serving %s version %s", served.model_name, version)
        except Exception as exc:  # the champion answers everyone meanwhile
            log.exception("loading the challenger version %s failed", version)
            self.run(self._swap_challenger, None, None).result()
            self.challenger_state = {"state": "failed", "version": version, "error": f"{type(exc).__name__}: {exc}"}

    def _swap_challenger(self, served: Served | None, position: LogPosition | None) -> None:
        """The challenger replaced (None: removed) between two batches, with the items added since its build."""
        with self._lock:
            if served is not None and position is not None:
                entries, _ = self.catalog.read(position)
                self._replay(served, entries)
            self.challenger = served

    def _swap(self, served: Served, position: LogPosition) -> None:
        """Items added since the build (all of them if the log was compacted meanwhile: a replay
        replaces, so replaying twice is harmless), then the one reference replaced (between two batches)."""
        with self._lock:
            entries, _ = self.catalog.read(position)
            self._replay(served, entries)
            self.served = served
            _freeze()

    def start(self) -> None:
        if self.settings.poll_seconds > 0 and self.alias and self._poller is None:
            self._stop.clear()
            self._poller = threading.Thread(target=self._poll_loop, name="recsys-poll", daemon=True)
            self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.settings.poll_seconds):
            self.poll_once()

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
            self._poller = None
        if self.exposures is not None:
            self.exposures.close()

    # ---------------------------------------------------------------- work on the model
    def run(self, fn: Callable, *args: Any) -> Future:
        """A `concurrent.futures.Future` of ``fn(*args)`` run on the model's worker thread (off the event loop)."""
        return self.model_thread.submit(fn, *args)

    def recommend(self, requests: list[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
        """Responses tagged with their ``variant``, or the `UnknownIdError` of each request that names unknown items."""
        with self._lock:
            challenger = self.challenger
            if challenger is None:
                return _tagged(self._recommend(requests), CHAMPION)
            variants = [variant_of(r, self.settings.challenger_share) for r in requests]
            out: list[dict[str, Any] | Exception] = [ValueError("unanswered")] * len(requests)
            for variant in (CHAMPION, CHALLENGER):
                rows = [i for i, v in enumerate(variants) if v == variant]
                if not rows:
                    continue
                group = [requests[i] for i in rows]
                answers = self._recommend(group) if variant == CHAMPION else self._recommend_on(challenger, group)
                for i, answer in zip(rows, _tagged(answers, variant)):
                    out[i] = answer
            return out

    def served_for(self, request: dict[str, Any]) -> Served:
        """The version that will answer ``request`` now (its new sentences are encoded with its encoder)."""
        challenger = self.challenger
        if challenger is not None and variant_of(request, self.settings.challenger_share) == CHALLENGER:
            return challenger
        return self.served

    def record(self, requests: Sequence[Mapping[str, Any]], responses: Sequence[Mapping[str, Any]]) -> None:
        """Count the responses sent, per variant and version, and log them to the exposure log (if any)."""
        for response in responses:
            self.counts.add(response["variant"], str(response.get("model_version", "")))
        if self.exposures is not None:
            try:
                self.exposures.write(requests, responses)
            except OSError:  # a full or unwritable disk must not fail the request that was answered
                log.exception("writing the exposure log %s failed", self.exposures.path)

    def variants(self) -> dict[str, Any]:
        """What ``/health`` says of the comparison: the share, the challenger's state, the counts."""
        challenger = self.challenger
        return {
            "challenger_share": self.settings.challenger_share,
            "effective_share": self.settings.challenger_share if challenger is not None else 0.0,
            "challenger": {**self.challenger_state, "model_uri": challenger.uri if challenger else None},
            "served": self.counts.snapshot(),
            "exposure_log": str(self.exposures.path) if self.exposures is not None else None,
        }

    def similar(self, item_id: str, k: int) -> tuple[list[dict[str, Any]], str]:
        """`Recommender.similar_items` of the model being served, and its version."""
        with self._lock:
            served = self.served
            return served.recommender.similar_items(item_id, k), served.version

    def _recommend(self, requests: list[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
        return self._recommend_on(self.served, requests)

    def _recommend_on(self, served: Served, requests: list[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
        recommend: Callable[..., list[dict[str, Any]]]
        if served.index is not None:
            recommend = partial(served.recommender.recommend_with_index, served.index)
        else:
            recommend = served.recommender.recommend
        try:
            return list(recommend(requests, k=self.settings.default_k))
        except UnknownIdError:
            out: list[dict[str, Any] | Exception] = []
            for request in requests:
                try:
                    out.extend(recommend([request], k=self.settings.default_k))
                except UnknownIdError as exc:
                    out.append(exc)
            return out

    def encode_sentences(self, texts: list[str | tuple[SentenceCache, str]]) -> list[None]:
        """Put new sentences into the sentence cache (the champion's, or the one paired with a text), one
        encoder pass per cache (on the text thread)."""
        by_cache: dict[int, tuple[SentenceCache, list[str]]] = {}
        for text in texts:
            cache, sentence = text if isinstance(text, tuple) else (self.served.sentence_cache, text)
            by_cache.setdefault(id(cache), (cache, []))[1].append(sentence)
        for cache, sentences in by_cache.values():
            cache(list(dict.fromkeys(sentences)))
        return [None] * len(texts)

    def check_room(self, item_ids: list[str]) -> None:
        """`CatalogFullError` unless the added items, with ``item_ids``, stay within ``max_added_items``.

        Policy: refuse, do not evict. An id already added (or a trained item already replaced) may
        be replaced again at any time; only ids new to the log count against the cap. Evicting
        would silently drop items a client was told were stored.
        """
        new = set(item_ids) - self.catalog.item_ids
        limit = self.settings.max_added_items
        if len(self.catalog.item_ids) + len(new) > limit:
            raise CatalogFullError(
                f"the catalog holds {len(self.catalog.item_ids)} added items of at most {limit} "
                f"(max_added_items); {len(new)} new ones do not fit: replace existing ones "
                "or raise the limit"
            )

    def add_items(self, items: list[dict[str, Any]], text_model: str, vectors: np.ndarray) -> dict[str, Any]:
        """Log the items (fsync), then add them to the model being served; `CatalogFullError` past the cap.

        Runs on the model thread, so the cap check and the append are not interleaved with another addition.
        """
        from recsys_tasks.text.texts import item_text

        self.check_room([str(i["item_id"]) for i in items])
        self.catalog.append(items, text_model, vectors)
        with self._lock:
            served = self.served
            cache = served.sentence_cache
            if text_model != cache.text_model:  # swapped to another text model meanwhile (its replay re-encoded)
                vectors = cache.encode([item_text(i) for i in items])
            report = self._apply(served, items, vectors)
            challenger = self.challenger
            if challenger is not None:  # both variants recommend what was added
                other = challenger.sentence_cache
                same = other.text_model == text_model and challenger.recommender.meta["text_dim"] == vectors.shape[1]
                self._apply(challenger, items, vectors if same else other.encode([item_text(i) for i in items]))
            return {"items": report, "catalog_size": len(served.recommender.item_ids), "model_version": served.version}


def _tagged(answers: list[dict[str, Any] | Exception], variant: str) -> list[dict[str, Any] | Exception]:
    """Each response with the variant that answered it (errors as they are)."""
    for answer in answers:
        if isinstance(answer, dict):
            answer["variant"] = variant
    return answers


def _freeze() -> None:
    """Move the loaded model's objects (~400k for MovieLens) out of the cyclic GC's reach: a full
    collection over them takes 100-300 ms, a latency spike whenever it happened to run."""
    gc.freeze()


def _followed_alias(model_uri: str | None) -> str | None:
    """The alias a model URI follows (None: a fixed version or run, nothing to poll)."""
    if model_uri is None:
        from recsys_tasks.registry.store import CHAMPION

        return CHAMPION
    if model_uri.startswith("models:/") and "@" in model_uri:
        return model_uri.split("@", 1)[1]
    return None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "model"

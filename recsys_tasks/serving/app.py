"""The HTTP API: recommendations for new users and new items, from the registry's champion.

``create_app()`` returns a FastAPI app (OpenAPI docs at ``/docs``) around a `ModelHolder`:

- GET  /health                   model name and version, catalog size (no API key needed);
- POST /recommend                one request of `requests.Request`, one response (the CLI's schema:
                                 each item with its score and a ``reason``);
- POST /recommend/batch          a list of requests, a list of responses;
- POST /items                    add or replace catalog items (`catalog.ItemIn`), servable at once;
- GET  /items/{item_id}/similar  the items closest to one (cosine of item vectors), ``?k=``.

The holder follows ``models:/<name>@champion``: a thread polls the alias, builds the new
`Recommender` completely (catalog additions replayed), then replaces one reference, so a request
is answered by the old model or the new one, never a mix. All model work runs on one thread;
concurrent /recommend requests are scored together there (the requests that arrive while a batch
is scored form the next one). Requests are scored on the event loop's own thread, as a bare endpoint
computes (a hop to another thread only contended for the GIL: measured 25% fewer requests/s); a lock
keeps catalog additions, swaps and similar-item lookups, which run on a worker thread, from
overlapping a batch. New sentences (stated tastes and profiles) are encoded before, on
``text_lanes`` threads of their own, those of similar length in one padded pass, behind an LRU
cache of recent sentences. Bodies are JSON validated by pydantic (422 naming the field), unknown
item ids give 422 (404 for a path id), bodies over ``max_body_bytes`` 413. Responses are
serialised by pydantic-core, and young-object collections are made rarer while serving.
"""

import asyncio
import gc
import hmac
import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Callable

import numpy as np
from fastapi import Body, Depends, FastAPI, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field, ValidationError
from pydantic_core import to_json
from starlette.requests import Request as HTTPRequest

from recsys_tasks.serving.catalog import MAX_ITEMS_PER_POST, CatalogLog, ItemIn, ItemsOut
from recsys_tasks.config import PipelineConfig, tracking_uri, workdir
from recsys_tasks.model.index import IndexConfig, ItemIndex, faiss_available
from recsys_tasks.model.recommender import Recommender, UnknownIdError
from recsys_tasks.model.requests import MAX_K, Request

log = logging.getLogger(__name__)
API_KEY_HEADER = "X-API-Key"
KEY_ERROR = f"missing or wrong API key (header {API_KEY_HEADER})"


@dataclass(frozen=True)
class ServeSettings:
    """How the API serves; secrets and origins also from the environment (`from_env`)."""

    model_uri: str | None = None  # default models:/<model_name>@champion; an alias URI is followed
    model_name: str = field(default_factory=lambda: PipelineConfig().registry.model_name)
    workdir: str | None = None  # default RECSYS_WORKDIR; added items live in <workdir>/serving/
    tracking_uri: str | None = None  # default MLFLOW_TRACKING_URI, else the workdir's SQLite store
    poll_seconds: float = 10.0  # how often the alias is checked; 0: never
    api_key: str | None = None  # when set, every endpoint but /health wants it in X-API-Key
    cors_origins: tuple[str, ...] = ()  # CORS is off unless origins are named
    default_k: int = 20
    max_batch: int = 64  # requests scored in one pass
    max_batch_requests: int = 1000  # requests in one POST /recommend/batch
    max_body_bytes: int = 8 << 20
    sentence_cache_size: int = 10_000
    index: str = "auto"  # "auto": a FAISS index from index_min_items items on (if installed); "exact"; "faiss"
    index_min_items: int = IndexConfig.min_items
    index_nprobe: int = IndexConfig.nprobe
    torch_threads: int = 1  # torch's and FAISS' threads: small batches run fastest on one; 0: their default
    text_lanes: int = 2  # sentence-encoder passes at once: a new sentence need not wait for the pass before it
    gc_threshold: int = 10_000  # new objects between young-generation collections while serving (Python: 700); 0: as is
    text_runtime: str = "onnx"  # new sentences through ONNX Runtime (~2x PyTorch on a CPU thread), "onnx-int8"
    # (its weights quantized: ~2.5x faster again, vectors at cosine ~0.95; `onnx_text`) or "torch"
    onnx_dir: str | None = None  # exported encoder graphs; default RECSYS_ONNX_DIR, else <workdir>/serving/onnx

    @classmethod
    def from_env(cls, **values: Any) -> "ServeSettings":
        """``RECSYS_API_KEY`` and ``RECSYS_CORS_ORIGINS`` (comma-separated), then ``values``."""
        env: dict[str, Any] = {}
        if os.environ.get("RECSYS_API_KEY"):
            env["api_key"] = os.environ["RECSYS_API_KEY"]
        if os.environ.get("RECSYS_CORS_ORIGINS"):
            env["cors_origins"] = tuple(o.strip() for o in os.environ["RECSYS_CORS_ORIGINS"].split(",") if o.strip())
        return cls(**{**env, **{k: v for k, v in values.items() if v is not None}})

    def root(self) -> Path:
        return Path(self.workdir).resolve() if self.workdir else workdir()

    def store(self) -> str:
        return self.tracking_uri or tracking_uri(self.root())

    def onnx_folder(self) -> Path:
        folder = self.onnx_dir or os.environ.get("RECSYS_ONNX_DIR")
        return Path(folder) if folder else self.root() / "serving" / "onnx"


class SentenceCache:
    """Vectors of recent sentences (LRU, bounded) in front of one text encoder; the misses of a
    call are encoded in one pass. Thread-safe: up to ``lanes`` encoder passes at once (each on
    its own thread, one torch thread each), and a lookup never waits for a pass."""

    def __init__(self, text_model: str, size: int, lanes: int = 1, runtime: str = "torch",
                 onnx_dir: str | Path | None = None, threads: int = 1):
        from recsys_tasks.text.onnx import sentence_encoder

        self.text_model = text_model
        self._encoder = sentence_encoder(text_model, runtime, onnx_dir, threads)  # ONNX Runtime or PyTorch
        self.runtime = getattr(self._encoder, "runtime", "torch")  # what serves: "onnx" may have fallen back
        self._encoder.encode_padded(["warm up", "warm up the padded pass"])  # lazy initialisation: not a request
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()  # the dict
        self._encoding = threading.BoundedSemaphore(max(1, lanes))  # passes at once
        self.passes = 0

    def __contains__(self, text: str) -> bool:
        return text in self._recent

    def __call__(self, texts: list[str]) -> np.ndarray:
        found = self._lookup(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            with self._encoding:
                found.update(self._lookup(missing))  # encoded by another lane meanwhile
                missing = [t for t in missing if t not in found]
                if missing:
                    found.update(zip(missing, self._encoder.encode_padded(missing)))
                    self.passes += 1
                    with self._lock:
                        self._recent.update((t, found[t]) for t in missing)
                        while len(self._recent) > self._size:
                            self._recent.popitem(last=False)
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, self._encoder.dim), np.float32)

    def _lookup(self, texts: list[str]) -> dict[str, np.ndarray]:
        with self._lock:
            hits = {t: self._recent[t] for t in texts if t in self._recent}
            for t in hits:
                self._recent.move_to_end(t)
        return hits

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode without keeping the vectors (item texts: they live in the catalog instead)."""
        with self._encoding:
            return self._encoder.encode(texts)


@dataclass(frozen=True)
class Served:
    """One loaded model version: replaced as a whole, never changed in place but by the model thread."""

    recommender: Recommender
    model_name: str
    version: str
    uri: str
    loaded_at: float
    index: ItemIndex | None = None  # ranks the catalog instead of an exact product (big catalogs)


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
        self.catalog = CatalogLog(settings.root() / "serving" / _safe(settings.model_name) / "items.jsonl")
        self._caches: dict[str, SentenceCache] = {}
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="recsys-model")
        self._lock = threading.RLock()  # the served model: a batch, a swap, an addition, one at a time
        self._text_thread = ThreadPoolExecutor(max(1, settings.text_lanes), thread_name_prefix="recsys-text")
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.last_poll: dict[str, Any] = {"at": None, "error": None}
        self.alias = _followed_alias(settings.model_uri)
        if settings.model_uri and self.alias:
            self.settings = replace(settings, model_name=settings.model_uri[len("models:/"):].split("@", 1)[0])
        if recommender is not None:  # a model built elsewhere (benchmarks): served as is, not polled
            self.alias = None
            self.served = self._served(self._with_cache(recommender), "given")
        elif self.alias:
            self.served, _ = self._build(f"models:/{self.settings.model_name}/{self._champion_version()}")
        else:
            self.served, _ = self._build(str(settings.model_uri))
        _freeze()

    # ---------------------------------------------------------------- loading and swapping
    def _champion_version(self) -> str:
        from recsys_tasks.registry.store import ModelNotFoundError, alias_version

        version = alias_version(self.settings.model_name, self.alias, self.settings.store())
        if version is None:
            raise ModelNotFoundError(f"cannot load model 'models:/{self.settings.model_name}@{self.alias}': "
                                     f"no such model or alias in {self.settings.store()}")
        return version

    def _build(self, uri: str) -> tuple[Served, int]:
        """Load a version and replay the catalog log onto it, off the model thread."""
        from recsys_tasks.registry.store import load_recommender

        recommender = self._with_cache(load_recommender(uri, uri=self.settings.store()))
        entries, position = self.catalog.read()
        self._replay(Served(recommender, self.settings.model_name, "", uri, 0.0), entries)
        return self._served(recommender, uri), position

    def _with_cache(self, recommender: Recommender) -> Recommender:
        text_model = recommender.meta["text_model"]
        if text_model not in self._caches:
            settings = self.settings
            self._caches[text_model] = SentenceCache(text_model, settings.sentence_cache_size, settings.text_lanes,
                                                     settings.text_runtime, settings.onnx_folder(),
                                                     max(1, settings.torch_threads))
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
        return Served(recommender, self.settings.model_name, str(recommender.meta.get("model_version", "")),
                      uri, time.time(), index)

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
        recommender = served.recommender
        cache = recommender.sentence_encoder
        same = [e["text_model"] == cache.text_model and len(e["vector"]) == recommender.meta["text_dim"]
                for e in entries]
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
        try:
            version = self._champion_version()
            if version == self.served.version:
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

    def _swap(self, served: Served, position: int) -> None:
        """Items added since the build, then the one reference replaced (between two batches)."""
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

    # ---------------------------------------------------------------- work on the model
    def run(self, fn: Callable, *args: Any):
        """A `concurrent.futures.Future` of ``fn(*args)`` run on the model's worker thread (off the event loop)."""
        return self._model_thread.submit(fn, *args)

    def recommend(self, requests: list[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
        """Responses, or the `UnknownIdError` of each request that names unknown items."""
        with self._lock:
            return self._recommend(requests)

    def similar(self, item_id: str, k: int) -> tuple[list[dict[str, Any]], str]:
        """`Recommender.similar_items` of the model being served, and its version."""
        with self._lock:
            served = self.served
            return served.recommender.similar_items(item_id, k), served.version

    def _recommend(self, requests: list[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
        served = self.served
        if served.index is not None:
            recommend = partial(served.recommender.recommend_with_index, served.index)
        else:
            recommend = served.recommender.recommend
        try:
            return recommend(requests, k=self.settings.default_k)
        except UnknownIdError:
            out: list[dict[str, Any] | Exception] = []
            for request in requests:
                try:
                    out.extend(recommend([request], k=self.settings.default_k))
                except UnknownIdError as exc:
                    out.append(exc)
            return out

    def encode_sentences(self, texts: list[str]) -> list[None]:
        """Put new sentences into the sentence cache, in one encoder pass (on the text thread)."""
        self.served.recommender.sentence_encoder(list(dict.fromkeys(texts)))
        return [None] * len(texts)

    def add_items(self, items: list[dict[str, Any]], text_model: str, vectors: np.ndarray) -> dict[str, Any]:
        """Log the items (fsync, while batches go on), then add them to the model being served."""
        from recsys_tasks.text.texts import item_text

        self.catalog.append(items, text_model, vectors)
        with self._lock:
            served = self.served
            cache = served.recommender.sentence_encoder
            if text_model != cache.text_model:  # swapped to another text model meanwhile (its replay re-encoded the log)
                vectors = cache.encode([item_text(i) for i in items])
            report = self._apply(served, items, vectors)
            return {"items": report, "catalog_size": len(served.recommender.item_ids), "model_version": served.version}


class _Batcher:
    """Work that arrives while its threads are busy is done together in their next pass.

    ``run(items) -> results`` (one result or exception per item) runs on ``executor``, at most
    ``lanes`` calls at a time: no timer, so a lone request waits for nothing (a free lane takes
    it) and a crowd is served in batches. ``executor=None``: on the event loop itself, once the
    requests already received have been read (the loop runs its ready callbacks first); a batch's
    answers go out before the next batch starts.
    """

    def __init__(self, run: Callable[[list], list], executor: ThreadPoolExecutor, max_batch: int, lanes: int = 1):
        self._run, self._executor, self._max_batch, self._lanes = run, executor, max_batch, lanes
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((item, future))
        if len(self._tasks) < self._lanes:
            self._tasks.add(loop.create_task(self._drain()))
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._executor is None:
                await asyncio.sleep(0)  # the requests read meanwhile join this batch
            while self._pending:
                batch, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
                try:
                    if self._executor is None:
                        results = self._run([r for r, _ in batch])
                    else:
                        results = await loop.run_in_executor(self._executor, self._run, [r for r, _ in batch])
                except Exception as exc:  # a bug, not bad input: every item of the batch gets a 500
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_exception(result) if isinstance(result, Exception) else future.set_result(result)
                if self._executor is None:
                    await asyncio.sleep(0)  # the answers go out, more requests come in
        finally:  # at once, not in a done-callback: an item submitted meanwhile would find no lane free
            self._tasks.discard(asyncio.current_task())


class ScoredItem(BaseModel):
    item_id: str
    score: float


class RecommendedItem(ScoredItem):
    reason: str = Field(description="why it is recommended, from the model's own inputs (`recsys_tasks.explain.reasons`), "
                                    "e.g. \"shares its director with Alien\", \"matches 'sci-fi'\", "
                                    "\"popular with students aged 18-24\", \"new: similar content to Star Wars\"",
                        examples=["shares its director with Alien"])


class Recommendation(BaseModel):
    request_id: str
    items: list[RecommendedItem]
    model_version: str


class Similar(BaseModel):
    item_id: str
    items: list[ScoredItem]
    model_version: str


def create_app(model_uri: str | None = None, workdir: str | Path | None = None,
               settings: ServeSettings | None = None, holder: ModelHolder | None = None) -> FastAPI:
    """The API on ``model_uri`` (default: the champion of ``workdir``'s registry, followed)."""
    settings = replace(settings or ServeSettings.from_env(), **{k: v for k, v in
                       {"model_uri": model_uri, "workdir": str(workdir) if workdir else None}.items() if v})
    holder = holder or ModelHolder(settings)
    settings = holder.settings
    batcher = _Batcher(holder.recommend, None, settings.max_batch)  # scored on the event loop
    sentences = _Batcher(holder.encode_sentences, holder._text_thread, settings.max_batch, max(1, settings.text_lanes))

    async def answer(requests: list[dict[str, Any]]) -> list[dict[str, Any] | BaseException]:
        """New sentences encoded first (on the text thread), then every request scored (model thread)."""
        recommender = holder.served.recommender
        cache = recommender.sentence_encoder
        new = {t for r in requests for t in recommender.new_sentences(r) if t not in cache}
        if new:
            await asyncio.gather(*[sentences.submit(t) for t in new])
        if len(requests) == 1:  # the common case, without a gather's tasks
            try:
                return [await batcher.submit(requests[0])]
            except UnknownIdError as exc:
                return [exc]
        return await asyncio.gather(*[batcher.submit(r) for r in requests], return_exceptions=True)

    async def lifespan(app: FastAPI):
        holder.start()
        thresholds = gc.get_threshold()
        if settings.gc_threshold > 0:  # each young collection scans every request in flight: ~15% of the CPU at 700
            gc.set_threshold(settings.gc_threshold, *thresholds[1:])
        yield
        gc.set_threshold(*thresholds)
        holder.stop()

    def key_error() -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        return 401, to_json({"detail": KEY_ERROR}), [(b"www-authenticate", b"APIKey")]

    def key_ok(key: str | bytes | None) -> bool:
        if not settings.api_key:
            return True
        key = key.encode() if isinstance(key, str) else key
        return bool(key) and hmac.compare_digest(key, settings.api_key.encode())

    async def recommend_one(content_type: str | None, body: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """POST /recommend: (status, JSON body, extra headers); the route and `_FastRecommend` both answer with it."""
        try:
            request = _parse_body(Request, content_type, body).to_plain()
        except RequestValidationError as exc:
            return 422, to_json(_invalid_detail(exc)), []
        [result] = await answer([request])
        if isinstance(result, UnknownIdError):
            return 422, to_json({"detail": [_unknown_detail(result, ["body"])]}), []
        if isinstance(result, BaseException):
            raise result
        return 200, to_json(result), []

    app = FastAPI(title="recsys", version="1", lifespan=lifespan,
                  description="Cold-start recommendations (new users, new items) from the registry's champion.")
    app.state.holder = holder
    app.add_middleware(_FastRecommend, answer=recommend_one, key_ok=key_ok, key_error=key_error)
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", API_KEY_HEADER])
    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    def require_key(key: Annotated[str | None, Depends(key_header)]) -> None:
        if not key_ok(key):
            raise HTTPException(401, KEY_ERROR, headers={"WWW-Authenticate": "APIKey"})

    guarded = [Depends(require_key)] if settings.api_key else []  # no key configured: no per-request check

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, exc: RequestValidationError) -> JSONResponse:
        """422 naming each field (the offending input is not echoed back)."""
        return JSONResponse(_invalid_detail(exc), status_code=422)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        served = holder.served
        return {"status": "ok", "model_name": served.model_name, "model_version": served.version,
                "model_uri": served.uri, "catalog_size": len(served.recommender.item_ids),
                "index": "faiss-ivf" if served.index is not None else "exact",
                "text_runtime": getattr(served.recommender.sentence_encoder, "runtime", "torch"),
                "loaded_at": served.loaded_at, "last_poll": holder.last_poll}

    @app.post("/recommend", response_model=Recommendation, dependencies=guarded,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/Request"}}}}})  # the component /recommend/batch declares
    async def recommend(http: HTTPRequest) -> Response:
        """Answers `requests.Request` (parsed and validated in one pass by pydantic-core, not by FastAPI).
        Served by `_FastRecommend` below the routing; this route documents it and answers where the app
        is mounted under a prefix."""
        status, body, headers = await recommend_one(http.headers.get("content-type"), await http.body())
        return Response(body, status, {k.decode(): v.decode() for k, v in headers}, media_type="application/json")

    @app.post("/recommend/batch", response_model=list[Recommendation], dependencies=guarded)
    async def recommend_batch(
            requests: Annotated[list[Request], Body(max_length=settings.max_batch_requests)]) -> JSONResponse:
        results = await answer([r.to_plain() for r in requests])
        unknown = [_unknown_detail(e, ["body", i]) for i, e in enumerate(results) if isinstance(e, UnknownIdError)]
        if unknown:
            raise HTTPException(422, unknown)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return _json(results)

    @app.post("/items", response_model=ItemsOut, dependencies=guarded)
    async def add_items(items: Annotated[list[ItemIn], Body(min_length=1, max_length=MAX_ITEMS_PER_POST)]) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        from recsys_tasks.text.texts import item_text

        records = [i.to_record() for i in items]
        cache = holder.served.recommender.sentence_encoder
        vectors = await run_in_threadpool(cache.encode, [item_text(r) for r in records])
        report = await asyncio.wrap_future(holder.run(holder.add_items, records, cache.text_model, vectors))
        return JSONResponse(report)

    @app.get("/items/{item_id}/similar", response_model=Similar, dependencies=guarded)
    async def similar(item_id: str, k: Annotated[int, Query(ge=1, le=MAX_K)] = 20) -> JSONResponse:
        try:
            items, version = await asyncio.wrap_future(holder.run(holder.similar, item_id, k))
        except UnknownIdError:
            raise HTTPException(404, f"unknown item id {item_id!r}") from None
        return _json({"item_id": item_id, "items": items, "model_version": version})

    return app


def _json(content: Any) -> Response:
    """A JSON response serialised by pydantic-core (several times faster than `JSONResponse`'s json.dumps;
    the same values, and the route's ``response_model`` still documents it)."""
    return Response(to_json(content), media_type="application/json")


def _parse_body(model: type[BaseModel], content_type: str | None, body: bytes) -> Any:
    """``model`` from a request body as FastAPI reads one (JSON without a content type or with a JSON
    one), in one pydantic-core pass instead of json.loads then validation; errors are FastAPI's 422."""
    subtype = (content_type or "").split(";", 1)[0].strip().lower().rpartition("/")[2]
    try:
        if not content_type or subtype == "json" or subtype.endswith("+json"):
            return model.model_validate_json(body)
        return model.model_validate(body)  # not JSON: the 422 FastAPI gives
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors(include_url=False, include_input=False)]) from None


def _invalid_detail(exc: RequestValidationError) -> dict[str, Any]:
    """The 422 body naming each field (the offending input is not echoed back)."""
    return {"detail": [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]}


def _unknown_detail(exc: UnknownIdError, loc: list) -> dict[str, Any]:
    return {"loc": [*loc, exc.field], "msg": f"unknown item id(s): {exc.ids[:20]}", "type": "unknown_item_id"}


class _FastRecommend:
    """POST /recommend answered here, below FastAPI's routing and exception middleware, with the route's
    own handler (``answer``): the same statuses and bodies, the API key checked the same way.

    The routing, dependency solving and response classes cost about as much per request as a bare
    endpoint's whole answer (py-spy under 50 clients: ~55% of the server's time); answered here,
    /recommend served 1.4-1.8x the requests/s (wrk, one pinned core; closing note of issue 4). Every
    other path, and /recommend under a mounted prefix, goes on to the app.
    """

    def __init__(self, app, answer: Callable, key_ok: Callable[[Any], bool], key_error: Callable):
        self.app, self.answer, self.key_ok, self.key_error = app, answer, key_ok, key_error

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/recommend" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if not self.key_ok(headers.get(API_KEY_HEADER.lower().encode())):
            status, body, extra = self.key_error()
        else:
            chunks, more = [], True
            while more:
                message = await receive()
                if message["type"] != "http.request":  # the client went away
                    return
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            content_type = headers.get(b"content-type")
            status, body, extra = await self.answer(content_type.decode("latin-1") if content_type else None,
                                                    b"".join(chunks))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *extra]})
        await send({"type": "http.response.body", "body": body})


class _BodyLimit:
    """413 for a body over ``limit`` bytes, declared (Content-Length) or streamed, before parsing."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                return await _too_large(scope, receive, send, self.limit)
            return await self.app(scope, receive, send)
        if scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True  # chunked: read it all here, within the limit
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await _too_large(scope, receive, send, self.limit)
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay():
            return pending.pop() if pending else await receive()

        return await self.app(scope, replay, send)


async def _too_large(scope, receive, send, limit: int) -> None:
    await JSONResponse({"detail": f"request body over {limit} bytes"}, status_code=413)(scope, receive, send)


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

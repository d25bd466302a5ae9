"""The HTTP API: recommendations for new users and new items, from the registry's champion.

``create_app()`` returns a FastAPI app (OpenAPI docs at ``/docs``) around a `ModelHolder`:

- GET  /health                   model name and version, catalog size, the champion/challenger split
                                 and the responses each variant served (no API key needed);
- POST /recommend                one request of `requests.Request`, one response (the CLI's schema:
                                 each item with its score and a ``reason``);
- POST /recommend/batch          a list of requests, a list of responses;
- POST /items                    add or replace catalog items (`schemas.ItemIn`), servable at once;
- GET  /items/{item_id}/similar  the items closest to one (cosine of item vectors), ``?k=``; an id
                                 may contain "/".

Closed and bounded: beyond loopback only with an API key (`settings`), the key checked before a
body is read, bodies over ``max_body_bytes`` 413 before parsing, every field capped (422 naming
it), unknown item ids 422 (404 for a path id), added items capped (409 past ``max_added_items``),
and every request but ``/health`` given ``request_timeout_s``: past it, 503 with Retry-After,
instead of a wait on a stuck model thread.
With ``challenger_share`` > 0, that share of users is answered by ``@challenger`` (`variants`); each
response names its ``variant`` and ``model_version``, and is counted (and logged, with an exposure log).
The work of a request runs off the event loop: new sentences are encoded on the text threads,
then concurrent requests are scored together on the model thread (`Batcher`), so ``/health``
and the reading of other requests go on meanwhile.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, which name create_app's locals.
import asyncio
import gc
import math
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from starlette.requests import Request as HTTPRequest

from recsys_tasks.model.recommender import UnknownIdError
from recsys_tasks.model.requests import MAX_K, Request
from recsys_tasks.serving.batching import Batcher
from recsys_tasks.serving.holder import CatalogFullError, ModelHolder
from recsys_tasks.serving.middleware import (
    API_KEY_HEADER,
    DOCS_ASSETS,
    KEY_ERROR,
    Answer,
    ApiKeyCheck,
    BodyLimit,
    FastRecommend,
)
from recsys_tasks.serving.schemas import (
    MAX_ITEMS_PER_POST,
    Invalid,
    ItemIn,
    ItemsOut,
    Problem,
    Recommendation,
    Similar,
)
from recsys_tasks.serving.settings import InsecureServeError, ServeSettings

__all__ = ["InsecureServeError", "ModelHolder", "ServeSettings", "create_app"]


def create_app(
    model_uri: str | None = None,
    workdir: str | Path | None = None,
    settings: ServeSettings | None = None,
    holder: ModelHolder | None = None,
) -> FastAPI:
    """The API on ``model_uri`` (default: the champion of ``workdir``'s registry, followed)."""
    given: dict[str, Any] = {"model_uri": model_uri, "workdir": str(workdir) if workdir else None}
    settings = replace(settings or ServeSettings.from_env(), **{k: v for k, v in given.items() if v})
    holder = holder or ModelHolder(settings)
    settings = holder.settings
    scorer = Batcher(holder.recommend, holder.model_thread, settings.max_batch)
    sentences = Batcher(holder.encode_sentences, holder.text_threads, settings.max_batch, max(1, settings.text_lanes))
    budget = settings.request_timeout_s or None  # None: no budget
    retry_after = str(max(1, math.ceil(budget or 1)))
    busy = (
        f"no answer within the request's time budget of {budget} s (request_timeout_s): the model is busy; "
        f"retry after {retry_after} s"
    )

    async def answer(requests: list[dict[str, Any]]) -> list[dict[str, Any] | BaseException]:
        """New sentences encoded first (text threads), then every request scored (model thread)."""
        new: set[tuple[Any, str]] = set()
        for request in requests:
            served = holder.served_for(request)  # its variant's version: the champion's unless split off
            cache = served.sentence_cache
            new.update((cache, t) for t in served.recommender.new_sentences(request) if t not in cache)
        if new:
            await asyncio.gather(*[sentences.submit(t) for t in new])
        if len(requests) == 1:  # the common case, without a gather's tasks
            try:
                return [await scorer.submit(requests[0])]
            except UnknownIdError as exc:
                return [exc]
        return await asyncio.gather(*[scorer.submit(r) for r in requests], return_exceptions=True)

    async def recommend_one(content_type: str | None, body: bytes) -> Answer:
        """POST /recommend, the one handler: `FastRecommend` and the route both answer with it."""
        try:
            request = _parse_body(Request, content_type, body).to_plain()
        except RequestValidationError as exc:
            return 422, to_json(_invalid_detail(exc)), []
        try:
            async with asyncio.timeout(budget):
                [result] = await answer([request])
        except TimeoutError:
            return 503, to_json({"detail": busy}), [(b"retry-after", retry_after.encode())]
        if isinstance(result, UnknownIdError):
            return 422, to_json({"detail": [_unknown_detail(result, ["body"])]}), []
        if isinstance(result, BaseException):
            raise result
        holder.record([request], [result])
        return 200, to_json(result), []

    async def lifespan(app: FastAPI):
        holder.start()
        thresholds = gc.get_threshold()
        if settings.gc_threshold > 0:  # each young collection scans every request in flight
            gc.set_threshold(settings.gc_threshold, *thresholds[1:])
        yield
        gc.set_threshold(*thresholds)
        holder.stop()

    # Swagger UI and ReDoc from the API's own assets (fastapi-offline's copies), so /docs works with no internet
    app = FastAPIOffline(
        title="recsys",
        version="1",
        lifespan=lifespan,
        description="Cold-start recommendations (new users, new items) from the registry's champion.",
        static_url=DOCS_ASSETS,
    )
    app.state.holder = holder
    app.add_middleware(FastRecommend, answer=recommend_one)  # added last is outermost: key, then size, then this
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.api_key:
        app.add_middleware(ApiKeyCheck, api_key=settings.api_key)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", API_KEY_HEADER],
        )
    # The key is checked by `ApiKeyCheck`; the dependency declares it in the OpenAPI schema.
    guarded = [Depends(APIKeyHeader(name=API_KEY_HEADER, auto_error=False))] if settings.api_key else []
    refused: dict[int | str, dict[str, Any]] = {}
    if settings.api_key:
        refused[401] = {"model": Problem, "description": KEY_ERROR}
    invalid: dict[int | str, dict[str, Any]] = {
        422: {
            "model": Invalid,
            "description": "a field is invalid or over its limit (named in loc), or an item id is unknown",
        }
    }
    too_large: dict[int | str, dict[str, Any]] = {
        413: {"model": Problem, "description": f"body over {settings.max_body_bytes} bytes"}
    }
    malformed: dict[int | str, dict[str, Any]] = {
        400: {"model": Problem, "description": "the body cannot be parsed (not JSON in UTF-8)"}
    }
    overdue: dict[int | str, dict[str, Any]] = {}
    if budget:
        overdue[503] = {
            "model": Problem,
            "description": f"no answer within request_timeout_s ({budget} s): the model is busy (a POST /items "
            "may still have stored its items: posting them again replaces them)",
            "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
        }

    class OverBudget(Exception):
        """A request ran past ``request_timeout_s``: answered 503 with Retry-After."""

    @app.exception_handler(OverBudget)
    async def _over_budget(_, exc: OverBudget) -> JSONResponse:
        return JSONResponse({"detail": busy}, status_code=503, headers={"Retry-After": retry_after})

    async def within_budget(work: Any) -> Any:
        """``await work`` within ``request_timeout_s``; past it `OverBudget` (the work is cancelled where it waits)."""
        try:
            async with asyncio.timeout(budget):
                return await work
        except TimeoutError:
            raise OverBudget from None

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, exc: RequestValidationError) -> JSONResponse:
        """422 naming each field (the offending input is not echoed back)."""
        return JSONResponse(_invalid_detail(exc), status_code=422)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        served = holder.served
        return {
            "status": "ok",
            "model_name": served.model_name,
            "model_version": served.version,
            "model_uri": served.uri,
            "catalog_size": len(served.recommender.item_ids),
            "index": "faiss-ivf" if served.index is not None else "exact",
            "text_runtime": getattr(served.recommender.sentence_encoder, "runtime", "torch"),
            "loaded_at": served.loaded_at,
            "last_poll": holder.last_poll,
            "variants": holder.variants(),
        }

    @app.post(
        "/recommend",
        response_model=Recommendation,
        dependencies=guarded,
        responses={**refused, **too_large, **invalid, **overdue},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Request"}}},
            }
        },
    )  # the component /recommend/batch declares
    async def recommend(http: HTTPRequest) -> Response:
        """Answers `requests.Request` (parsed and validated in one pass by pydantic-core, not by FastAPI).
        Served by `FastRecommend` below the routing; this route documents it and answers where the app
        is mounted under a prefix."""
        status, body, headers = await recommend_one(http.headers.get("content-type"), await http.body())
        return Response(body, status, {k.decode(): v.decode() for k, v in headers}, media_type="application/json")

    @app.post(
        "/recommend/batch",
        response_model=list[Recommendation],
        dependencies=guarded,
        responses={**refused, **too_large, **malformed, **invalid, **overdue},
    )
    async def recommend_batch(
        requests: Annotated[list[Request], Body(max_length=settings.max_batch_requests)],
    ) -> Response:
        plain = [r.to_plain() for r in requests]
        results = await within_budget(answer(plain))
        unknown = [_unknown_detail(e, ["body", i]) for i, e in enumerate(results) if isinstance(e, UnknownIdError)]
        if unknown:
            raise HTTPException(422, unknown)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        holder.record(plain, results)  # every result is a response here
        return _json(results)

    @app.post(
        "/items",
        response_model=ItemsOut,
        dependencies=guarded,
        responses={
            **refused,
            **too_large,
            **malformed,
            **invalid,
            409: {"model": Problem, "description": "the added items would exceed max_added_items"},
            **overdue,
        },
    )
    async def add_items(items: Annotated[list[ItemIn], Body(min_length=1, max_length=MAX_ITEMS_PER_POST)]) -> Response:
        """Adds or replaces items. Past ``max_added_items`` distinct added ids the post is refused
        (409), nothing evicted; an id already added may always be replaced."""
        records = [i.to_record() for i in items]
        try:
            holder.check_room([r["item_id"] for r in records])  # before encoding; checked again when added
            report = await within_budget(add(records))
        except CatalogFullError as exc:
            raise HTTPException(409, str(exc)) from None
        return JSONResponse(report)

    async def add(records: list[dict[str, Any]]) -> dict[str, Any]:
        """Encode the items (a worker thread), then add them on the model thread."""
        from recsys_tasks.text.texts import item_text

        cache = holder.served.sentence_cache
        vectors = await asyncio.to_thread(cache.encode, [item_text(r) for r in records])  # waiting on it is cancellable
        return await asyncio.wrap_future(holder.run(holder.add_items, records, cache.text_model, vectors))

    @app.get(
        "/items/{item_id:path}/similar",
        response_model=Similar,
        dependencies=guarded,
        responses={**refused, **invalid, 404: {"model": Problem, "description": "unknown item id"}, **overdue},
    )
    async def similar(item_id: str, k: Annotated[int, Query(ge=1, le=MAX_K)] = 20) -> Response:
        try:
            items, version = await within_budget(asyncio.wrap_future(holder.run(holder.similar, item_id, k)))
        except UnknownIdError:
            raise HTTPException(404, f"unknown item id {item_id[:300]!r}") from None
        return _json({"item_id": item_id, "items": items, "model_version": version})

    return app


def _json(content: Any) -> Response:
    """A JSON response serialised by pydantic-core (the route's ``response_model`` still documents it)."""
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
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_input=False)]
        ) from None


def _invalid_detail(exc: RequestValidationError) -> dict[str, Any]:
    """The 422 body naming each field (the offending input is not echoed back)."""
    return {"detail": [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]}


def _unknown_detail(exc: UnknownIdError, loc: list) -> dict[str, Any]:
    return {"loc": [*loc, exc.field], "msg": f"unknown item id(s): {exc.ids[:20]}", "type": "unknown_item_id"}

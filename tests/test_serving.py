"""The HTTP API (`recsys_tasks.serving.app`) on a real registry: every endpoint, every bad input,
items added over HTTP, the hot swap of the champion under load, a real uvicorn process, and
``mlflow models serve`` on the same registered model.

One workdir is trained once per module (`run_pipeline` on the tiny RecBole data, tiny dims):
version 1 is the champion; version 2 is registered from the same model files, so moving the
alias to it is a promotion the server must follow. Apps that add items get a workdir of their
own (`serve_root`): the items log lives under the serving workdir, the model in the shared store.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import numpy as np
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from recsys_tasks.config import PipelineConfig
from recsys_tasks.model.requests import MAX_HISTORY, MAX_ID, MAX_K, MAX_PROFILE_FIELD, MAX_TEXT
from recsys_tasks.pipeline import run_pipeline
from recsys_tasks.registry.store import CHAMPION, load_recommender
from recsys_tasks.serving.app import InsecureServeError, ModelHolder, ServeSettings, create_app
from recsys_tasks.serving.batching import Batcher

pytestmark = pytest.mark.slow  # one real training run and real servers (~60 s in all)

TINY = {
    "kg.embedding_dim": 4,
    "kg.epochs": 1,
    "kg.early_stopping_frequency": 1,
    "kg.eval_fraction": 0.1,
    "finetune.dim": 8,
    "finetune.hidden": 16,
    "finetune.epochs": 2,
}
NAME = PipelineConfig().registry.model_name
TINY_ITEM_IDS = {str(i) for i in range(1, 16)}
KEY = "s3cret-key"


@dataclass(frozen=True)
class Trained:
    root: Path  # workdir of the run: runs/, mlflow.db, mlartifacts/

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, make_tiny_dir: Callable[[Path, str], Path]) -> Trained:
    base = tmp_path_factory.mktemp("serving")
    data = make_tiny_dir(base / "data", "recbole")
    cfg = PipelineConfig().with_overrides({"extract.source": str(data), **TINY})
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("RECSYS_WORKDIR", raising=False)
        assert run_pipeline(cfg, base / "work", run_id="first")["model_version"] == "1"
    trained = Trained(base / "work")
    client = trained.client()
    v1 = client.get_model_version(NAME, "1")
    v2 = client.create_model_version(NAME, v1.source, run_id=v1.run_id)  # a promotion candidate
    assert str(v2.version) == "2" and str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "1"
    return trained


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_URI", "RECSYS_WORKDIR", "RECSYS_API_KEY", "RECSYS_CORS_ORIGINS"):
        monkeypatch.delenv(name, raising=False)


def _settings(trained: Trained, root: Path | None = None, **values: Any) -> ServeSettings:
    values = {"poll_seconds": 0, "torch_threads": 0, **values}
    return ServeSettings(workdir=str(root or trained.root), tracking_uri=trained.uri, **values)


@pytest.fixture(scope="module")
def client(trained: Trained) -> Iterator[TestClient]:
    """A read-only app on the champion (nothing is added to its catalog)."""
    with TestClient(create_app(settings=_settings(trained))) as client:
        yield client


@pytest.fixture
def serve_root(tmp_path: Path) -> Path:
    return tmp_path / "serve"


# ---------------------------------------------------------------- endpoints
def test_health_names_the_model_version_and_catalog_size(client: TestClient) -> None:
    health = client.get("/health").json()
    assert (health["status"], health["model_name"], health["model_version"]) == ("ok", NAME, "1")
    assert health["catalog_size"] == 15 and health["index"] == "exact"
    assert health["model_uri"] == f"models:/{NAME}/1"
    assert health["text_runtime"] == "onnx"  # the default: new sentences through ONNX Runtime


def test_pytorch_encodes_new_sentences_when_asked_and_gives_the_same_answers(
    trained: Trained, client: TestClient, serve_root: Path
) -> None:
    requests = [
        {"request_id": "t", "text": "I like films about lighthouses and storms.", "k": 10},
        {"request_id": "p", "profile": {"age": 33, "gender": "M", "occupation": "beekeeper"}, "k": 10},
    ]
    with TestClient(create_app(settings=_settings(trained, serve_root, text_runtime="torch"))) as eager:
        assert eager.get("/health").json()["text_runtime"] == "torch"
        by_torch = eager.post("/recommend/batch", json=requests).json()
    by_onnx = client.post("/recommend/batch", json=requests).json()
    assert [[i["item_id"] for i in r["items"]] for r in by_onnx] == [
        [i["item_id"] for i in r["items"]] for r in by_torch
    ]
    for a, b in zip(by_onnx, by_torch):
        np.testing.assert_allclose([i["score"] for i in a["items"]], [i["score"] for i in b["items"]], atol=1e-4)


@pytest.mark.parametrize(("page", "scripts"), [("/docs", 2), ("/redoc", 1)])
def test_docs_pages_load_their_scripts_from_the_api_not_a_cdn(client: TestClient, page: str, scripts: int) -> None:
    html = client.get(page).text
    assets = re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', html)
    assert len([a for a in assets if a.endswith((".js", ".css"))]) == scripts, html
    assert "cdn." not in html and "googleapis" not in html, html
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 1000, asset


def test_openapi_docs_describe_every_endpoint(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    openapi = client.get("/openapi.json").json()
    paths = openapi["paths"]
    assert {"/health", "/recommend", "/recommend/batch", "/items", "/items/{item_id}/similar"} <= set(paths)
    schemas = openapi["components"]["schemas"]
    answer = paths["/recommend"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    items = schemas[answer["$ref"].rsplit("/", 1)[1]]["properties"]["items"]["items"]["$ref"].rsplit("/", 1)[1]
    assert set(schemas[items]["required"]) == {"item_id", "score", "reason"}
    assert schemas[items]["properties"]["reason"]["type"] == "string"
    batch = paths["/recommend/batch"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert batch["items"]["$ref"] == answer["$ref"]
    body = paths["/recommend"]["post"]["requestBody"]  # parsed by pydantic-core, documented as FastAPI would
    assert (
        body["required"]
        and body["content"]["application/json"]["schema"]
        == paths["/recommend/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]["items"]
    )
    request = schemas[body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert request["required"] == ["request_id"] and {"profile", "history", "text", "k"} <= set(request["properties"])


def test_openapi_lists_the_error_responses_of_each_route(trained: Trained) -> None:
    with TestClient(create_app(settings=_settings(trained, api_key=KEY))) as client:
        openapi = client.get("/openapi.json").json()
    paths, schemas = openapi["paths"], openapi["components"]["schemas"]
    expected = {
        ("/recommend", "post"): {"200", "401", "413", "422", "503"},
        ("/recommend/batch", "post"): {"200", "400", "401", "413", "422", "503"},
        ("/items", "post"): {"200", "400", "401", "409", "413", "422", "503"},
        ("/items/{item_id}/similar", "get"): {"200", "401", "404", "422", "503"},
        ("/health", "get"): {"200"},
    }
    for (path, method), statuses in expected.items():
        assert set(paths[path][method]["responses"]) == statuses, path
        if "503" in statuses:  # the time budget: when to come back
            assert "Retry-After" in paths[path][method]["responses"]["503"]["headers"], path
    problem = paths["/items/{item_id}/similar"]["get"]["responses"]["404"]["content"]["application/json"]["schema"]
    assert schemas[problem["$ref"].rsplit("/", 1)[1]]["required"] == ["detail"]


def test_recommend_answers_like_the_cli(client: TestClient, trained: Trained) -> None:
    request = {
        "request_id": "r1",
        "profile": {"age": 30, "gender": "F"},
        "text": "I like Drama.",
        "history": [{"item_id": "1", "rating": 5}],
        "exclude": ["2"],
        "k": 4,
    }
    response = client.post("/recommend", json=request)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"request_id", "items", "model_version", "intent", "variant"} and body["model_version"] == "1"
    assert [set(i) for i in body["items"]] == [{"item_id", "score", "reason", "title", "year", "genres"}] * 4
    assert all(isinstance(i["reason"], str) and i["reason"] for i in body["items"])
    assert not {"1", "2"} & {i["item_id"] for i in body["items"]}
    (expected,) = load_recommender(uri=trained.uri).recommend([request])  # what `recsys recommend` prints
    assert body == {**expected, "variant": "champion"}  # the API also names the alias that answered


def test_recommend_batch_answers_each_request_in_order(client: TestClient) -> None:
    requests = [
        {"request_id": "a", "user_id": "3", "k": 2},
        {"request_id": "b", "candidates": ["4", "5"]},
        {"request_id": "c"},
    ]
    response = client.post("/recommend/batch", json=requests)
    assert response.status_code == 200
    body = response.json()
    assert [r["request_id"] for r in body] == ["a", "b", "c"]
    assert [len(r["items"]) for r in body] == [2, 2, 15]  # k=20 by default: the whole tiny catalog
    assert all(isinstance(i["reason"], str) and i["reason"] for r in body for i in r["items"])
    assert body[0] == client.post("/recommend", json=requests[0]).json()


def test_similar_items_are_the_closest_others(client: TestClient) -> None:
    body = client.get("/items/4/similar", params={"k": 5}).json()
    assert body["item_id"] == "4" and body["model_version"] == "1"
    ids, scores = [i["item_id"] for i in body["items"]], [i["score"] for i in body["items"]]
    assert len(ids) == 5 and "4" not in ids and set(ids) <= TINY_ITEM_IDS
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 + 1e-6 for s in scores)
    assert len(client.get("/items/4/similar").json()["items"]) == 14  # k=20 by default, itself left out


# ---------------------------------------------------------------- bad input
BAD_REQUESTS = [
    ({"k": 3}, ["body", "request_id"]),
    ({"request_id": "a", "k": 0}, ["body", "k"]),
    ({"request_id": "a", "k": MAX_K + 1}, ["body", "k"]),
    ({"request_id": "a", "history": [{"item_id": "1"}] * (MAX_HISTORY + 1)}, ["body", "history"]),
    ({"request_id": "a", "text": "x" * (MAX_TEXT + 1)}, ["body", "text"]),
    ({"request_id": "a", "profile": {"age": -1}}, ["body", "profile", "age"]),
    ({"request_id": "a", "history": [{"item_id": 1}]}, ["body", "history", 0, "item_id"]),
    ({"request_id": "a", "sql": "drop table"}, ["body", "sql"]),
    ([1, 2], ["body"]),
    ({"request_id": "a", "profile": {"occupation": "x" * (MAX_PROFILE_FIELD + 1)}}, ["body", "profile", "occupation"]),
    ({"request_id": "a", "profile": {"zip_code": "9" * (MAX_PROFILE_FIELD + 1)}}, ["body", "profile", "zip_code"]),
    ({"request_id": "x" * (MAX_ID + 1)}, ["body", "request_id"]),
    ({"request_id": "a", "candidates": ["1"] * (MAX_HISTORY + 1)}, ["body", "candidates"]),
    ({"request_id": "a", "exclude": ["x" * (MAX_ID + 1)]}, ["body", "exclude", 0]),
]


@pytest.mark.parametrize(
    ("body", "loc"),
    BAD_REQUESTS,
    ids=[
        "no-request-id",
        "k-0",
        "k-over-max",
        "history-too-long",
        "text-too-long",
        "negative-age",
        "item-id-not-string",
        "unknown-field",
        "not-an-object",
        "occupation-too-long",
        "zip-too-long",
        "request-id-too-long",
        "too-many-candidates",
        "excluded-id-too-long",
    ],
)
def test_schema_violations_are_422_naming_the_field(client: TestClient, body: Any, loc: list) -> None:
    response = client.post("/recommend", json=body)
    assert response.status_code == 422
    assert loc in [e["loc"] for e in response.json()["detail"]]
    assert "x" * 100 not in response.text  # the offending input is not echoed back


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/items", [{"title": "no id"}], ["body", 0, "item_id"]),
        ("/items", [{"item_id": "n1", "year": "soon"}], ["body", 0, "year"]),
        ("/items", [{"item_id": "n1", "title": "a", "movie_title": "b"}], ["body", 0]),
        ("/items", [{"item_id": "n1", "genres": ["A|B"]}], ["body", 0, "genres"]),
        ("/items", [{"item_id": "n1", "genres": ["x" * 65]}], ["body", 0, "genres", 0]),
        ("/items", [], ["body"]),
        ("/items", [{"item_id": str(i)} for i in range(1001)], ["body"]),
        ("/recommend/batch", [{"request_id": "a"}, {"request_id": "b", "k": -1}], ["body", 1, "k"]),
        ("/recommend/batch", [{"request_id": str(i)} for i in range(1001)], ["body"]),
    ],
    ids=[
        "item-without-id",
        "year-not-a-number",
        "title-given-twice",
        "genre-with-bar",
        "genre-too-long",
        "no-items",
        "too-many-items",
        "batch-bad-k",
        "batch-too-long",
    ],
)
def test_bad_items_and_batches_are_422(client: TestClient, path: str, body: Any, loc: list) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 422
    assert loc in [e["loc"] for e in response.json()["detail"]]


@pytest.mark.parametrize(
    ("path", "body", "loc", "named"),
    [
        ("/recommend", {"request_id": "a", "candidates": ["1", "zz9"]}, ["body", "candidates"], "zz9"),
        ("/recommend", {"request_id": "a", "history": [{"item_id": "nope7"}]}, ["body", "history"], "nope7"),
        (
            "/recommend/batch",
            [{"request_id": "a"}, {"request_id": "b", "candidates": ["q1"]}],
            ["body", 1, "candidates"],
            "q1",
        ),
    ],
    ids=["candidate", "history", "batch-names-the-request"],
)
def test_unknown_item_ids_are_422_naming_them(client: TestClient, path: str, body: Any, loc: list, named: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 422
    [detail] = response.json()["detail"]
    assert detail["loc"] == loc and named in detail["msg"] and detail["type"] == "unknown_item_id"


def test_unknown_item_for_similar_is_404_naming_it(client: TestClient) -> None:
    response = client.get("/items/no-such-item/similar")
    assert response.status_code == 404 and "no-such-item" in response.json()["detail"]
    assert client.get("/items/4/similar", params={"k": MAX_K + 1}).status_code == 422


def test_oversized_bodies_are_413_declared_or_streamed(trained: Trained) -> None:
    app = create_app(settings=_settings(trained, max_body_bytes=1000))
    with TestClient(app) as small:
        big = json.dumps({"request_id": "a", "exclude": ["1"] * 500}).encode()
        assert small.post("/recommend", content=big, headers={"content-type": "application/json"}).status_code == 413
        chunks = iter([big[:600], big[600:]])  # no Content-Length: sent chunked
        assert small.post("/recommend", content=chunks, headers={"content-type": "application/json"}).status_code == 413
        streamed_ok = iter([b'{"request_id": ', b'"a", "k": 1}'])
        assert (
            small.post("/recommend", content=streamed_ok, headers={"content-type": "application/json"}).status_code
            == 200
        )


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ("application/vnd.api+json", 200),
        (None, 200),
        ("text/plain", 422),
        ("application/x-www-form-urlencoded", 422),
    ],
)
def test_a_body_is_read_as_json_as_fastapi_reads_one(client: TestClient, content_type: str | None, status: int) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/recommend", content=b'{"request_id": "a", "k": 2}', headers=headers)
    assert response.status_code == status
    if status == 422:
        assert response.json()["detail"][0]["loc"] == ["body"]


def test_malformed_json_is_422_and_nothing_is_evaluated(client: TestClient) -> None:
    for raw in (
        b'{"request_id": "a", ',
        b"__import__('os').system('true')",
        b"\x80\x04\x95",
    ):  # the last: a pickle header
        response = client.post("/recommend", content=raw, headers={"content-type": "application/json"})
        assert response.status_code in (400, 422)


def test_the_server_keeps_serving_after_bad_input(client: TestClient) -> None:
    for body, _ in BAD_REQUESTS:
        client.post("/recommend", json=body)
    client.post("/recommend", json={"request_id": "a", "candidates": ["zz9"]})
    client.post("/recommend", content=b"{", headers={"content-type": "application/json"})
    response = client.post("/recommend", json={"request_id": "after", "k": 3})
    assert response.status_code == 200 and len(response.json()["items"]) == 3
    assert client.get("/health").json()["status"] == "ok"


# ---------------------------------------------------------------- API key and CORS
def test_api_key_when_configured(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_API_KEY", KEY)
    settings = ServeSettings.from_env(
        workdir=str(trained.root), tracking_uri=trained.uri, poll_seconds=0, torch_threads=0
    )
    assert settings.api_key == KEY
    with TestClient(create_app(settings=settings)) as client:
        request = {"request_id": "a", "k": 1}
        assert client.post("/recommend", json=request).status_code == 401
        assert client.post("/recommend", json=request, headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/items", json=[{"item_id": "n"}], headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get("/items/1/similar").status_code == 401
        assert client.post("/recommend", json=request, headers={"X-API-Key": KEY}).status_code == 200
        assert client.get("/health").status_code == 200  # liveness probes need no key
        assert client.get("/docs-assets/swagger-ui.css").status_code == 200  # the docs' own assets need none
        assert client.get("/docs-assetsX/recommend").status_code == 401


def test_the_api_key_is_checked_before_the_body_is_read(trained: Trained) -> None:
    """A wrong key gets its 401 whatever the body: too large, not JSON, or invalid (not a 413 or a 422)."""
    with TestClient(create_app(settings=_settings(trained, api_key=KEY, max_body_bytes=1000))) as client:
        huge = json.dumps({"request_id": "a", "exclude": ["1"] * 500}).encode()
        for path in ("/recommend", "/recommend/batch", "/items"):
            for body in (huge, b"{not json", b'{"k": -1}', iter([huge[:600], huge[600:]])):
                for headers in ({}, {"X-API-Key": "wrong"}):
                    response = client.post(path, content=body, headers={"content-type": "application/json", **headers})
                    assert response.status_code == 401, (path, body, headers)
                    assert response.headers["www-authenticate"] == "APIKey"
        assert (
            client.post(
                "/recommend", content=huge, headers={"content-type": "application/json", "X-API-Key": KEY}
            ).status_code
            == 413
        )
        assert client.get("/openapi.json").status_code == 200  # the docs need no key


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org", ""])
def test_serving_beyond_loopback_without_an_api_key_is_refused(host: str) -> None:
    with pytest.raises(InsecureServeError, match="without an API key"):
        ServeSettings(host=host)
    assert ServeSettings(host=host, api_key=KEY).host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts_need_no_api_key(host: str) -> None:
    assert ServeSettings(host=host).api_key is None


def test_recsys_serve_on_a_public_interface_without_a_key_exits_2_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from recsys_tasks.cli import main

    assert main(["serve", "--workdir", str(tmp_path), "--host", "0.0.0.0", "--port", "1"]) == 2
    error = capsys.readouterr().err
    assert "'0.0.0.0' without an API key" in error and "RECSYS_API_KEY" in error
    assert not (tmp_path / "mlflow.db").exists()  # refused before the registry was touched


def test_cors_is_off_unless_origins_are_configured(client: TestClient, trained: Trained) -> None:
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/recommend", headers=preflight).headers
    with TestClient(create_app(settings=_settings(trained, cors_origins=("https://example.org",)))) as allowed:
        headers = allowed.options("/recommend", headers=preflight).headers
        assert headers["access-control-allow-origin"] == "https://example.org"


def test_a_cors_post_to_recommend_gets_the_allow_origin_header(trained: Trained) -> None:
    with TestClient(create_app(settings=_settings(trained, cors_origins=("https://example.org",)))) as allowed:
        answer = allowed.post("/recommend", json={"request_id": "a", "k": 1}, headers={"Origin": "https://example.org"})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "https://example.org"


@pytest.mark.parametrize(
    "body, status",
    [
        ({"request_id": "ok", "user_id": "3", "k": 4}, 200),
        ({"request_id": "bad", "k": 0}, 422),
        ({"request_id": "unknown", "candidates": ["zz"]}, 422),
        ("not json", 422),
    ],
)
def test_the_route_answers_as_the_fast_path_where_the_app_is_mounted_under_a_prefix(
    trained: Trained, monkeypatch: pytest.MonkeyPatch, body: Any, status: int
) -> None:
    """Under a prefix `_FastRecommend` does not see /recommend, the FastAPI route does: same answers."""
    from fastapi import FastAPI

    monkeypatch.setenv("RECSYS_API_KEY", KEY)
    settings = ServeSettings.from_env(
        workdir=str(trained.root), tracking_uri=trained.uri, poll_seconds=0, torch_threads=0
    )
    api = create_app(settings=settings)
    parent = FastAPI(lifespan=lambda _: api.router.lifespan_context(api))
    parent.mount("/api", api)
    with TestClient(api) as direct, TestClient(parent) as mounted:
        for headers in ({"X-API-Key": KEY}, {"X-API-Key": "wrong"}):
            send = (
                {"json": body}
                if not isinstance(body, str)
                else {"content": body, "headers": {"content-type": "application/json"}}
            )
            send.setdefault("headers", {}).update(headers)
            fast, routed = direct.post("/recommend", **send), mounted.post("/api/recommend", **send)
            assert (fast.status_code, fast.json()) == (routed.status_code, routed.json())
            assert fast.status_code == (status if headers["X-API-Key"] == KEY else 401)
            assert fast.headers.get("www-authenticate") == routed.headers.get("www-authenticate")


# ---------------------------------------------------------------- items added over HTTP
NEW_ITEMS = [
    {
        "item_id": "n1",
        "movie_title": "Space Wars",
        "release_year": "1999",
        "class": "Sci-Fi Action",
        "entity_id": "m.film1",
    },  # the dataset's field names; an entity the KG knows (item 1's)
    {
        "item_id": "n2",
        "title": "Quiet Drama",
        "year": 2001,
        "genres": "Drama|Comedy",
        "description": "Two sisters meet again.",
    },  # the plain names; no entity
    {"item_id": "3", "title": "Movie 3 (remastered)", "genres": ["Sci-Fi"]},  # replaces a trained item
]


def test_added_items_are_recommendable_at_once_and_survive_a_restart(
    trained: Trained, serve_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recsys_tasks.explain import reasons

    # The tiny model's vectors are noise: reasons that need their agreement are let through here.
    monkeypatch.setattr(reasons, "SIMILAR_MIN", -1.0)
    monkeypatch.setattr(reasons, "RELATED_MIN", -1.0)
    settings = _settings(trained, serve_root)
    with TestClient(create_app(settings=settings)) as client:
        response = client.post("/items", json=NEW_ITEMS)
        assert response.status_code == 200
        body = response.json()
        assert body["items"] == [
            {"item_id": "n1", "status": "added", "kg": "entity"},
            {"item_id": "n2", "status": "added", "kg": "none"},
            {"item_id": "3", "status": "updated", "kg": "item"},
        ]
        assert body["catalog_size"] == client.get("/health").json()["catalog_size"] == 17
        asked = {"request_id": "new", "candidates": ["n1", "n2", "5"], "k": 3}
        before = client.post("/recommend", json=asked).json()
        assert {i["item_id"] for i in before["items"]} == {"n1", "n2", "5"}
        everything = client.post("/recommend", json={"request_id": "all", "k": 17}).json()
        assert {"n1", "n2"} <= {i["item_id"] for i in everything["items"]}
        # Reasons see the changes at once: n2 (no interactions, and the request cites no item) is new;
        # item 3, replaced as a whole, has its new title and no longer its KG entity (without the
        # change: "shares its director with Movie 3").
        assert {i["item_id"]: i["reason"] for i in everything["items"]}["n2"] == "new in the catalog"
        renamed = client.post(
            "/recommend", json={"request_id": "t", "history": [{"item_id": "3", "rating": 5}], "candidates": ["4"]}
        ).json()
        assert renamed["items"][0]["reason"] == "similar to Movie 3 (remastered)"
        similar = client.get("/items/n1/similar", params={"k": 3}).json()
        assert len(similar["items"]) == 3 and "n1" not in {i["item_id"] for i in similar["items"]}
        assert client.get("/items/1/similar", params={"k": 16}).status_code == 200
    log_file = serve_root / "serving" / NAME / "items.jsonl"
    assert len(log_file.read_text().splitlines()) == 3
    with TestClient(create_app(settings=settings)) as restarted:
        assert restarted.get("/health").json()["catalog_size"] == 17
        assert restarted.post("/recommend", json=asked).json() == before  # same vectors, same scores


def test_items_are_embedded_with_the_models_own_encoder_and_kg(trained: Trained, serve_root: Path) -> None:
    from recsys_tasks.text.encoder import TextEncoder
    from recsys_tasks.text.texts import item_text

    holder = ModelHolder(_settings(trained, serve_root))
    with TestClient(create_app(holder=holder)) as client:
        assert client.post("/items", json=NEW_ITEMS[:2]).status_code == 200
    rec = holder.served.recommender
    text_dim = int(rec.meta["text_dim"])
    records = [rec.bundle.catalog.iloc[rec.item_row[i]].to_dict() for i in ("n1", "n2")]
    assert (
        records[0]["title"] == "Space Wars" and records[0]["year"] == 1999 and records[0]["genres"] == "Sci-Fi|Action"
    )
    assert records[1]["genres"] == "Drama|Comedy" and records[1]["description"] == "Two sisters meet again."
    content = rec.bundle.item_content
    expected = TextEncoder(rec.meta["text_model"], device="cpu").encode([item_text(r) for r in records])
    np.testing.assert_allclose(content[[rec.item_row["n1"], rec.item_row["n2"]], :text_dim], expected, atol=1e-5)
    np.testing.assert_array_equal(content[rec.item_row["n1"], text_dim:], content[rec.item_row["1"], text_dim:])
    assert not content[rec.item_row["n2"], text_dim:].any()  # no KG node known: zeros
    assert (rec.bundle.catalog["id_row"].iloc[-2:] == rec.meta["n_id_items"]).all()  # no ID part


def test_a_cut_short_log_line_is_skipped_at_restart(trained: Trained, serve_root: Path) -> None:
    settings = _settings(trained, serve_root)
    with TestClient(create_app(settings=settings)) as client:
        client.post("/items", json=NEW_ITEMS[1:2])
    log_file = serve_root / "serving" / NAME / "items.jsonl"
    with log_file.open("a") as handle:
        handle.write('{"item": {"item_id": "half"')  # a crash in the middle of a write
    with TestClient(create_app(settings=settings)) as restarted:
        assert restarted.get("/health").json()["catalog_size"] == 16
        assert restarted.post("/recommend", json={"request_id": "a", "candidates": ["n2"]}).status_code == 200


def test_item_ids_with_a_slash_are_reachable_for_similar_items(trained: Trained, serve_root: Path) -> None:
    with TestClient(create_app(settings=_settings(trained, serve_root))) as client:
        assert (
            client.post(
                "/items",
                json=[
                    {"item_id": "tt/123", "title": "Slashed", "genres": ["Drama"]},
                    {"item_id": "a/b/c", "title": "Deeper"},
                ],
            ).status_code
            == 200
        )
        for item_id, url in (
            ("tt/123", "/items/tt/123/similar"),
            ("tt/123", "/items/tt%2F123/similar"),
            ("a/b/c", "/items/a/b/c/similar"),
        ):
            response = client.get(url, params={"k": 3})
            assert response.status_code == 200, url
            body = response.json()
            assert body["item_id"] == item_id and len(body["items"]) == 3
            assert item_id not in {i["item_id"] for i in body["items"]}
        missing = client.get("/items/no/such/similar")
        assert missing.status_code == 404 and "no/such" in missing.json()["detail"]


def test_added_items_are_capped_and_replacements_always_fit(trained: Trained, serve_root: Path) -> None:
    settings = _settings(trained, serve_root, max_added_items=2)
    with TestClient(create_app(settings=settings)) as client:
        assert client.post("/items", json=NEW_ITEMS[:2]).status_code == 200
        full = client.post("/items", json=NEW_ITEMS[2:])  # a third id
        assert full.status_code == 409 and "max_added_items" in full.json()["detail"]
        assert (
            client.post(
                "/items", json=[{"item_id": "n1", "title": "n1, again"}, {"item_id": "n2", "title": "n2, again"}]
            ).status_code
            == 200
        )
        assert client.get("/health").json()["catalog_size"] == 17
        too_many = client.post("/items", json=[{"item_id": "n1"}, {"item_id": "n3"}])
        assert too_many.status_code == 409  # the whole post is refused: n1 is not replaced
        assert client.get("/items/n3/similar").status_code == 404
    log_file = serve_root / "serving" / NAME / "items.jsonl"
    assert len(log_file.read_text().splitlines()) == 4  # two items, each written twice
    with TestClient(create_app(settings=settings)) as restarted:  # compacted on load: each item once, as last written
        assert [json.loads(line)["item"]["title"] for line in log_file.read_text().splitlines()] == [
            "n1, again",
            "n2, again",
        ]
        assert restarted.get("/health").json()["catalog_size"] == 17
        assert restarted.post("/items", json=[{"item_id": "n9"}]).status_code == 409  # the cap counts the log


def test_the_log_is_compacted_on_load_keeping_each_items_last_write(tmp_path: Path) -> None:
    from recsys_tasks.serving.catalog import CatalogLog

    catalog = CatalogLog(tmp_path / "items.jsonl")
    vectors = np.eye(3, dtype=np.float32)
    for round_ in range(3):  # one log per round, joined: a log that grew before it could be compacted
        piece = CatalogLog(tmp_path / f"round{round_}.jsonl")
        piece.append([{"item_id": "a", "title": f"a{round_}"}, {"item_id": "b", "title": f"b{round_}"}], "m", vectors)
        with catalog.path.open("a") as handle:
            handle.write(piece.path.read_text())
    with catalog.path.open("a") as handle:
        handle.write('{"item": {"item_id": "cut"')  # a crash in the middle of a write
    reloaded = CatalogLog(catalog.path)
    assert reloaded.compact() == 5 and reloaded.item_ids == {"a", "b"}
    entries, position = reloaded.read()
    assert [e["item"]["title"] for e in entries] == ["a2", "b2"] and position.lines == 2
    np.testing.assert_array_equal(entries[1]["vector"], vectors[1])
    assert reloaded.compact() == 0  # nothing left to drop: the file is not rewritten


def test_the_log_stays_bounded_under_many_replacements_of_the_same_ids(tmp_path: Path) -> None:
    from recsys_tasks.serving.catalog import CatalogLog

    catalog = CatalogLog(tmp_path / "items.jsonl")
    vectors = np.eye(3, dtype=np.float32)
    for round_ in range(300):
        catalog.append([{"item_id": i, "title": f"{i}{round_}"} for i in "abc"], "m", vectors)
        assert len(catalog.path.read_text().splitlines()) <= 2 * 3, f"round {round_}: the log grew past 2x its items"
    assert catalog.generation > 0 and not catalog.path.with_name("items.jsonl.compacting").exists()
    entries, _ = CatalogLog(catalog.path).read()  # a restart reads every item once more, as last written
    assert {e["item"]["item_id"]: e["item"]["title"] for e in entries} == {"a": "a299", "b": "b299", "c": "c299"}


def test_a_position_read_before_a_compaction_rereads_the_whole_log(tmp_path: Path) -> None:
    """A swap built before a compaction replays every item, not lines counted in the old file."""
    from recsys_tasks.serving.catalog import CatalogLog

    catalog = CatalogLog(tmp_path / "items.jsonl")
    one = np.ones((1, 2), np.float32)
    catalog.append([{"item_id": "a", "title": "a0"}], "m", one)
    catalog.append([{"item_id": "b", "title": "b0"}], "m", one)
    _, position = catalog.read()
    assert catalog.read(position)[0] == []  # nothing new since
    for round_ in range(1, 4):
        catalog.append([{"item_id": "a", "title": f"a{round_}"}], "m", one)
    assert catalog.generation == 1 and len(catalog.path.read_text().splitlines()) == 2  # 5 lines, 2 items
    assert [e["item"]["title"] for e in catalog.read(position)[0]] == ["b0", "a3"]


def test_added_items_replaced_over_http_keep_the_log_bounded_and_survive_a_restart(
    trained: Trained, serve_root: Path
) -> None:
    settings = _settings(trained, serve_root)
    log_file = serve_root / "serving" / NAME / "items.jsonl"
    with TestClient(create_app(settings=settings)) as client:
        for round_ in range(12):
            items = [{"item_id": f"r{i}", "title": f"r{i} take {round_}"} for i in range(3)]
            assert client.post("/items", json=items).status_code == 200
            assert len(log_file.read_text().splitlines()) <= 2 * 3
        before = client.get("/health").json()["catalog_size"]
        similar = client.get("/items/r1/similar", params={"k": 5}).json()["items"]
    assert before == 18
    with TestClient(create_app(settings=settings)) as restarted:
        assert restarted.get("/health").json()["catalog_size"] == before
        assert restarted.get("/items/r1/similar", params={"k": 5}).json()["items"] == similar
    assert sorted(json.loads(line)["item"]["title"] for line in log_file.read_text().splitlines()) == [
        f"r{i} take 11" for i in range(3)
    ]


def test_a_stuck_model_thread_gets_503_with_retry_after_and_the_server_recovers(
    trained: Trained, serve_root: Path
) -> None:
    """The model thread blocks on an event; each route gives up after the (tiny) configured budget."""
    holder = ModelHolder(_settings(trained, serve_root, request_timeout_s=0.05))
    release = threading.Event()
    recommend = holder._recommend

    def stuck(requests: list[dict[str, Any]]) -> list[Any]:
        release.wait(60)
        return recommend(requests)

    holder._recommend = stuck  # type: ignore[method-assign]
    with TestClient(create_app(holder=holder)) as client:
        try:
            calls = [
                ("post", "/recommend", {"json": {"request_id": "a", "k": 2}}),
                ("post", "/recommend/batch", {"json": [{"request_id": "b", "k": 2}]}),
                ("post", "/items", {"json": [{"item_id": "late", "title": "Late"}]}),
                ("get", "/items/1/similar", {}),
            ]
            for method, path, kwargs in calls:
                response = getattr(client, method)(path, **kwargs)
                assert response.status_code == 503, path
                assert response.headers["retry-after"] == "1" and "request_timeout_s" in response.json()["detail"]
            assert client.get("/health").status_code == 200  # the event loop was never held
        finally:
            release.set()
        # the stuck pass ends; requests given up on before their pass are dropped, not scored later
        response = client.post("/recommend", json={"request_id": "after", "k": 2})
        assert response.status_code == 200 and len(response.json()["items"]) == 2
        assert client.get("/items/late/similar").status_code == 404  # the addition given up on never ran
        assert client.post("/items", json=[{"item_id": "late", "title": "Late"}]).status_code == 200
        assert client.get("/items/late/similar", params={"k": 2}).status_code == 200


def test_request_timeout_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="request_timeout_s"):
        ServeSettings(request_timeout_s=-1)


def test_health_answers_while_the_largest_batch_is_scored(trained: Trained) -> None:
    """Scoring blocks on an event here; /health still answers before it is released (no timing involved:
    on the event loop, the health check could only answer once scoring had given up waiting)."""
    holder = ModelHolder(_settings(trained, max_batch_requests=8))
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    recommend = holder._recommend

    def blocked(requests: list[dict[str, Any]]) -> list[Any]:
        started.set()
        release.wait(30)
        finished.set()
        return recommend(requests)

    holder._recommend = blocked  # type: ignore[method-assign]
    batch = [
        {
            "request_id": str(i),
            "text": "I like Drama and Comedy. " * 400,
            "profile": {"occupation": "x" * 100},
            "history": [{"item_id": "1"}] * 100,
            "k": MAX_K,
        }
        for i in range(8)
    ]
    with TestClient(create_app(holder=holder)) as client, ThreadPoolExecutor(1) as pool:
        scored = pool.submit(client.post, "/recommend/batch", json=batch)
        assert started.wait(60), "scoring never started"
        health = client.get("/health")
        answered_while_blocked = not finished.is_set()
        release.set()
        assert health.status_code == 200 and answered_while_blocked
        assert scored.result().status_code == 200 and len(scored.result().json()) == 8
        assert client.post("/recommend/batch", json=batch + batch[:1]).status_code == 422  # over max_batch_requests


# ---------------------------------------------------------------- batching and the sentence cache
def test_concurrent_requests_are_scored_in_one_pass(trained: Trained) -> None:
    holder = ModelHolder(_settings(trained))
    passes: list[int] = []
    recommend = holder.recommend
    holder.recommend = lambda requests: passes.append(len(requests)) or recommend(requests)  # type: ignore[method-assign]
    batcher = Batcher(holder.recommend, holder.model_thread, holder.settings.max_batch)

    async def fire() -> list[dict[str, Any]]:
        return await asyncio.gather(*[batcher.submit({"request_id": str(i), "k": 2}) for i in range(10)])

    responses = asyncio.run(fire())
    assert [r["request_id"] for r in responses] == [str(i) for i in range(10)]
    assert sum(passes) == 10 and len(passes) <= 2


def test_requests_queued_together_are_scored_in_batches_off_the_event_loop() -> None:
    calls: list[tuple[list[int], str]] = []

    def run(items: list[int]) -> list[int]:
        calls.append((items, threading.current_thread().name))
        return [i * 10 for i in items]

    async def fire() -> tuple[list[int], str]:
        batcher = Batcher(run, ThreadPoolExecutor(1, thread_name_prefix="worker"), max_batch=8)
        return await asyncio.gather(*[batcher.submit(i) for i in range(10)]), threading.current_thread().name

    results, loop_thread = asyncio.run(fire())
    assert results == [i * 10 for i in range(10)]
    assert [items for items, _ in calls] == [list(range(8)), [8, 9]]  # max_batch, then the rest
    assert loop_thread not in {thread for _, thread in calls}
    assert all(thread.startswith("worker") for _, thread in calls)


def test_the_api_scores_off_its_event_loop_and_never_while_items_are_added(trained: Trained, serve_root: Path) -> None:
    """Scoring runs on the model thread, not the loop's; an addition and a batch hold the model's lock in turn."""
    holder = ModelHolder(_settings(trained, serve_root))
    spans: list[tuple[str, float, float, str]] = []

    def timed(name: str, fn):
        def wrapper(*args):
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                spans.append((name, start, time.perf_counter(), threading.current_thread().name))

        return wrapper

    apply = holder._apply
    holder._apply = timed("add", lambda *a: time.sleep(0.3) or apply(*a))  # type: ignore[method-assign]
    holder._recommend = timed("score", holder._recommend)  # type: ignore[method-assign]
    with TestClient(create_app(holder=holder)) as client:
        with ThreadPoolExecutor(4) as pool:
            added = pool.submit(client.post, "/items", json=NEW_ITEMS[:1])
            time.sleep(0.1)
            asked = [pool.submit(client.post, "/recommend", json={"request_id": str(i), "k": 3}) for i in range(6)]
            assert added.result().status_code == 200 and all(f.result().status_code == 200 for f in asked)
        loop_thread = client.portal.call(lambda: threading.current_thread().name)
    adds = [(a, b) for name, a, b, _ in spans if name == "add"]
    scores = [(a, b, t) for name, a, b, t in spans if name == "score"]
    assert len(adds) == 1 and scores and loop_thread not in {t for _, _, t in scores}
    assert all(t.startswith("recsys-model") for _, _, t in scores)
    assert all(b <= adds[0][0] or a >= adds[0][1] for a, b, _ in scores)  # never during the addition


def test_new_sentences_are_encoded_once_in_one_pass_and_recent_ones_kept(trained: Trained) -> None:
    holder = ModelHolder(_settings(trained, sentence_cache_size=2))
    cache = holder.served.recommender.sentence_encoder
    assert "I like owls." not in cache
    calls: list[list[str]] = []
    encode = cache._encoder.encode_padded
    cache._encoder.encode_padded = lambda texts: calls.append(list(texts)) or encode(texts)
    user = "3"  # a known user: their profile sentence is in the bundle, only the tastes are new
    requests = [
        {"request_id": str(i), "user_id": user, "text": t}
        for i, t in enumerate(["I like owls.", "I like bats.", "I like owls."])
    ]
    first = holder.recommend(requests)
    assert calls == [["I like owls.", "I like bats."]]  # two new sentences, one encoder pass
    assert holder.recommend(requests[:1]) == first[:1] and len(calls) == 1  # cached
    holder.recommend([{"request_id": "c", "user_id": user, "text": "I like cats."}])  # evicts the oldest
    holder.recommend([{"request_id": "b", "user_id": user, "text": "I like bats."}])
    assert calls[1:] == [["I like cats."], ["I like bats."]]
    assert len(cache._recent) == 2 and "I like bats." in cache and "I like owls." not in cache


def test_a_vector_index_ranks_like_the_exact_product(trained: Trained, client: TestClient, serve_root: Path) -> None:
    pytest.importorskip("faiss")
    requests = [
        {"request_id": "known", "user_id": "3", "k": 5},
        {"request_id": "cold", "text": "I like Drama.", "k": 20},
        {"request_id": "excl", "history": [{"item_id": "4"}], "exclude": ["5", "zz"], "k": 10},
        {"request_id": "cand", "candidates": ["1", "2", "9"], "history": [{"item_id": "2"}], "k": 2},
    ]
    exact = client.post("/recommend/batch", json=requests).json()
    with TestClient(create_app(settings=_settings(trained, serve_root, index="faiss"))) as indexed:
        assert indexed.get("/health").json()["index"] == "faiss-ivf"
        assert indexed.post("/recommend/batch", json=requests).json() == exact  # one cell: every item is scanned
        assert indexed.post("/items", json=NEW_ITEMS).status_code == 200
        ranked = indexed.post("/recommend", json={"request_id": "all", "k": 17}).json()["items"]
    assert {"n1", "n2"} <= {i["item_id"] for i in ranked} and len(ranked) == 17  # in the index at once, no duplicate


def test_a_second_lane_takes_work_while_the_first_is_busy() -> None:
    """Text lanes: a sentence arriving during a pass is encoded at once on another thread (it
    would wait for the pass with one lane), and a lane does not take an item a busy one holds."""
    started, release = threading.Event(), threading.Event()
    calls: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        calls.append(items)
        if items == [1]:
            started.set()
            assert release.wait(10), "the second lane never ran"
        else:
            release.set()
        return [i * 10 for i in items]

    async def fire() -> list[int]:
        batcher = Batcher(run, ThreadPoolExecutor(2), max_batch=8, lanes=2)
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        return [await batcher.submit(2), await first, await batcher.submit(3)]

    assert asyncio.run(fire()) == [20, 10, 30] and calls == [[1], [2], [3]]


def test_a_new_profile_sentence_is_encoded_on_a_text_lane_before_scoring(trained: Trained) -> None:
    holder = ModelHolder(_settings(trained))
    cache = holder.served.recommender.sentence_encoder
    threads: list[str] = []
    encode = cache._encoder.encode_padded
    cache._encoder.encode_padded = lambda texts: threads.append(threading.current_thread().name) or encode(texts)
    with TestClient(create_app(holder=holder)) as client:
        profile = {"age": 41, "gender": "F", "occupation": "lighthouse keeper"}
        assert client.post("/recommend", json={"request_id": "p", "profile": profile}).status_code == 200
    assert threads and all(t.startswith("recsys-text") for t in threads)  # not on the model thread
    assert "A 35-44 year old female lighthouse keeper." in cache


def test_young_collections_are_rarer_while_serving(trained: Trained) -> None:
    before = gc.get_threshold()
    with TestClient(create_app(settings=_settings(trained, gc_threshold=12_345))):
        assert gc.get_threshold() == (12_345, *before[1:])
    assert gc.get_threshold() == before


def test_a_new_sentence_is_encoded_once_before_its_request_is_scored(client: TestClient) -> None:
    cache = client.app.state.holder.served.recommender.sentence_encoder
    text, passes = "I like films about lighthouses.", cache.passes
    assert text not in cache
    for _ in range(2):
        assert client.post("/recommend", json={"request_id": "t", "user_id": "3", "text": text}).status_code == 200
        assert text in cache and cache.passes == passes + 1


# ---------------------------------------------------------------- hot swap of the champion
def test_a_new_champion_is_swapped_in_while_requests_keep_succeeding(trained: Trained, serve_root: Path) -> None:
    client_mlflow = trained.client()
    settings = _settings(trained, serve_root, poll_seconds=0.2)
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()
    try:
        with TestClient(create_app(settings=settings)) as client:
            assert client.post("/items", json=NEW_ITEMS[:1]).status_code == 200  # replayed onto version 2

            def fire() -> None:
                n = 0
                while not stop.is_set() and n < 2000:
                    n += 1
                    response = client.post(
                        "/recommend",
                        json={"request_id": str(n), "user_id": str(n % 12 + 1), "candidates": ["n1", "1", "2"], "k": 2},
                    )
                    statuses.append(response.status_code)
                    versions.append(response.json().get("model_version", "?"))

            threads = [threading.Thread(target=fire) for _ in range(3)]
            for thread in threads:
                thread.start()
            time.sleep(0.5)
            client_mlflow.set_registered_model_alias(NAME, CHAMPION, "2")
            deadline = time.monotonic() + 30
            while client.get("/health").json()["model_version"] != "2" and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.3)
            stop.set()
            for thread in threads:
                thread.join()
            health = client.get("/health").json()
    finally:
        stop.set()
        client_mlflow.set_registered_model_alias(NAME, CHAMPION, "1")
    assert health["model_version"] == "2" and health["catalog_size"] == 16 and health["last_poll"]["error"] is None
    assert statuses and set(statuses) == {200}, f"{len(statuses) - statuses.count(200)} requests failed"
    assert versions[0] == "1" and versions[-1] == "2" and set(versions) == {"1", "2"}


# ---------------------------------------------------------------- real servers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, seconds: float = 90) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{process.stdout.read()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise AssertionError(f"{url} not up after {seconds} s")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _server(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_recsys_serve_with_an_unknown_model_exits_2_naming_it(
    trained: Trained, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from recsys_tasks.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    for uri in ("models:/no-such-model@champion", f"models:/{NAME}/99"):
        assert main(["serve", "--workdir", str(trained.root), "--model", uri, "--port", "1"]) == 2
        assert uri in capsys.readouterr().err


@pytest.mark.parametrize(
    ("store", "command"),
    [
        ("broken", ["serve"]),
        ("unreachable", ["serve"]),
        ("broken", ["serve", "--model", f"models:/{NAME}/1"]),  # a fixed version: loaded, not looked up
        ("broken", ["recommend", "--requests", "REQUESTS"]),
    ],
)
def test_recsys_serve_and_recommend_with_a_failing_store_exit_1_in_one_line_naming_it(
    store: str, command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from recsys_tasks.cli import main

    if store == "broken":
        (tmp_path / "bad.db").write_bytes(b"not a SQLite database " * 100)
        uri = f"sqlite:///{tmp_path / 'bad.db'}"
    else:  # nothing listens there; no retries, so the failure is immediate
        uri = f"http://127.0.0.1:{_free_port()}"
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (tmp_path / "requests.jsonl").write_text('{"request_id": "a"}\n')
    argv = [str(tmp_path / "requests.jsonl") if a == "REQUESTS" else a for a in command]
    argv += ["--workdir", str(tmp_path / "w")] + (["--port", "1"] if command[0] == "serve" else [])
    assert main(argv) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith(f"recsys {command[0]}: error:")]
    assert len(errors) == 1 and f"MLflow store {uri}" in errors[0] and "Traceback" not in err


@dataclass
class RealServers:
    """`recsys serve` and `mlflow models serve` on loopback ports, started together (imports take a while)."""

    recsys: str
    mlflow: str
    processes: dict[str, subprocess.Popen]


@pytest.fixture(scope="module")
def real_servers(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServers]:
    recsys_port, mlflow_port = _free_port(), _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    # MLflow starts `uvicorn` by name, so the venv's bin must be on PATH; --env-manager local: no downloads.
    env = {k: v for k, v in os.environ.items() if k not in ("RECSYS_API_KEY", "RECSYS_WORKDIR")}
    env.update(MLFLOW_TRACKING_URI=trained.uri, PATH=f"{mlflow_cli.parent}:{os.environ['PATH']}")
    processes = {
        "recsys": _server(
            [
                sys.executable,
                "-m",
                "recsys_tasks.cli",
                "serve",
                "--workdir",
                str(tmp_path_factory.mktemp("real") / "serve"),
                "--port",
                str(recsys_port),
                "--poll-seconds",
                "0",
                "--no-access-log",
            ],
            env,
        ),
        "mlflow": _server(
            [
                str(mlflow_cli),
                "models",
                "serve",
                "-m",
                f"models:/{NAME}@{CHAMPION}",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(mlflow_port),
            ],
            env,
        ),
    }
    try:
        yield RealServers(f"http://127.0.0.1:{recsys_port}", f"http://127.0.0.1:{mlflow_port}", processes)
    finally:
        for process in processes.values():
            _stop(process)


def test_recsys_serve_runs_under_uvicorn_on_a_loopback_port(real_servers: RealServers) -> None:
    import httpx

    base, process = real_servers.recsys, real_servers.processes["recsys"]
    _wait_until_up(f"{base}/health", process)
    assert httpx.get(f"{base}/health").json()["model_version"] == "1"
    response = httpx.post(f"{base}/recommend", json={"request_id": "real", "user_id": "3", "k": 3})
    assert response.status_code == 200 and len(response.json()["items"]) == 3
    assert httpx.post(f"{base}/recommend", json={"request_id": "real", "k": 0}).status_code == 422
    assert httpx.post(f"{base}/items", json=NEW_ITEMS[1:2]).status_code == 200
    assert httpx.post(f"{base}/recommend", json={"request_id": "x", "candidates": ["n2"]}).status_code == 200
    _stop(process)
    assert process.returncode is not None  # stopped by SIGTERM, port released


def test_mlflow_models_serve_answers_from_the_same_registered_model(
    real_servers: RealServers, trained: Trained
) -> None:
    import httpx

    _wait_until_up(f"{real_servers.mlflow}/ping", real_servers.processes["mlflow"])
    requests = [
        {"request_id": "a", "user_id": "3", "k": 2},
        {"request_id": "b", "profile": {"age": 30, "gender": "F"}, "text": "I like Drama.", "k": 3},
    ]
    response = httpx.post(f"{real_servers.mlflow}/invocations", json={"dataframe_records": requests}, timeout=60)
    assert response.status_code == 200, response.text[:2000]
    predictions = response.json()["predictions"]
    expected = load_recommender(f"models:/{NAME}/1", uri=trained.uri).recommend(requests)
    assert [p["items"] for p in predictions] == [e["items"] for e in expected]


# ---------------------------------------------------------------- generated requests (Schemathesis)
@pytest.fixture(scope="module")
def api_schema(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The app's own OpenAPI schema, behind an API key, with the champion loaded (lifespan run once)."""
    import schemathesis

    app = create_app(settings=_settings(trained, tmp_path_factory.mktemp("fuzz"), api_key=KEY))
    with TestClient(app):
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_generated_requests_never_get_a_server_error_and_match_the_schema(api_schema: Any, mode: str) -> None:
    """Every operation, with paths, queries and bodies generated from the schema (valid ones, then invalid
    ones): no 5xx, and every answer is one the OpenAPI document declares, with the body it declares."""
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

    checks = [not_a_server_error, status_code_conformance, response_schema_conformance]
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/recommend", "/items", "/health"}

    called = set()
    for operation in operations:

        @hypothesis.settings(
            max_examples=25,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy(GenerationMode(mode)))
        def call(case: Any) -> None:
            case.call_and_validate(headers={"X-API-Key": KEY}, checks=checks)
            called.add(case.operation.path)

        try:
            call()
        except hypothesis.errors.Unsatisfiable:  # nothing invalid to send (no parameters, no body)
            assert mode == "negative" and not (operation.body or operation.query or operation.path_parameters)
    assert called >= {"/recommend", "/recommend/batch", "/items"}

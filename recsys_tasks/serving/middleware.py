"""The ASGI layers around the app, outermost first: the API key, the body limit, the /recommend fast path.

Each answers before anything inside it runs: a request without the key gets its 401 before its
body is read (so a wrong key with a huge or malformed body is a 401, not a 413 or 422), and a body
over the limit gets its 413 before it is parsed.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic_core import to_json

__all__ = [
    "API_KEY_HEADER",
    "DOCS_ASSETS",
    "KEY_ERROR",
    "OPEN_PATHS",
    "Answer",
    "ApiKeyCheck",
    "BodyLimit",
    "FastRecommend",
]

API_KEY_HEADER = "X-API-Key"
KEY_ERROR = f"missing or wrong API key (header {API_KEY_HEADER})"
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})  # no key needed
DOCS_ASSETS = "/docs-assets"  # Swagger UI's and ReDoc's scripts, served by the API itself (no CDN): no key needed

Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]  # status, JSON body, extra headers


class ApiKeyCheck:
    """401 for every path but `OPEN_PATHS` unless header ``X-API-Key`` is ``api_key`` (compared in
    constant time), from the headers alone: the body is never read for a refused request."""

    def __init__(self, app: Any, api_key: str):
        self.app, self._key = app, api_key.encode()

    def key_ok(self, key: bytes | None) -> bool:
        if not key:  # absent or empty
            return False
        return hmac.compare_digest(key, self._key)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or _open(_route_path(scope)):
            return await self.app(scope, receive, send)
        if self.key_ok(dict(scope["headers"]).get(API_KEY_HEADER.lower().encode())):
            return await self.app(scope, receive, send)
        await _send(send, (401, to_json({"detail": KEY_ERROR}), [(b"www-authenticate", b"APIKey")]))


class BodyLimit:
    """413 for a body over ``limit`` bytes, declared (Content-Length) or streamed, before parsing."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                return await _send(send, self._too_large())
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
                return await _send(send, self._too_large())
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay():
            return pending.pop() if pending else await receive()

        return await self.app(scope, replay, send)

    def _too_large(self) -> Answer:
        return 413, to_json({"detail": f"request body over {self.limit} bytes"}), []


class FastRecommend:
    """POST /recommend answered here, below FastAPI's routing, by the route's own handler (``answer``,
    called with the content type and the body): the same statuses and bodies as the route.

    The routing, dependency solving and response classes cost about as much per request as the
    answer itself; every other path, and /recommend under a mounted prefix, goes on to the app.
    """

    def __init__(self, app: Any, answer: Callable[[str | None, bytes], Awaitable[Answer]]):
        self.app, self.answer = app, answer

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/recommend" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        content_type = dict(scope["headers"]).get(b"content-type")
        await _send(send, await self.answer(content_type.decode("latin-1") if content_type else None, b"".join(chunks)))


async def _send(send, answer: Answer) -> None:
    status, body, extra = answer
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(DOCS_ASSETS + "/")


def _route_path(scope: dict[str, Any]) -> str:
    """The path the app routes on: without the prefix it is mounted under (``root_path``)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path

"""The request/response schema shared by the CLI, the MLflow pyfunc model and the API.

Request: ``{"request_id": str, "user_id"?: str, "profile"?: {...}, "history"?: [{"item_id",
"rating"?, "timestamp"?}], "text"?: str, "candidates"?: [str], "exclude"?: [str], "k"?: int}``.
Only ``request_id`` is required. Parsing is plain JSON into pydantic models: nothing from a
request is unpickled or evaluated. Every string and list is capped (`recsys_tasks.limits`), so the
work one request can ask for is bounded; a longer one is refused naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recsys_tasks.limits import MAX_HISTORY, MAX_ID, MAX_K, MAX_PROFILE_FIELD, MAX_TEXT

Id = Annotated[str, Field(max_length=MAX_ID)]
ProfileField = Annotated[str, Field(max_length=MAX_PROFILE_FIELD)]


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    age: int | None = Field(None, ge=0, le=130)
    gender: ProfileField | None = None
    occupation: ProfileField | None = None
    zip_code: ProfileField | None = None


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: Id
    rating: float | None = None
    timestamp: int | None = None


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: Id
    user_id: Id | None = None
    profile: Profile | None = None
    history: list[HistoryEntry] | None = Field(None, max_length=MAX_HISTORY)
    text: str | None = Field(None, max_length=MAX_TEXT)
    candidates: list[Id] | None = Field(None, max_length=MAX_HISTORY)
    exclude: list[Id] | None = Field(None, max_length=MAX_HISTORY)
    k: int | None = Field(None, ge=1, le=MAX_K)

    def to_plain(self) -> dict[str, Any]:
        """A dict without unset fields (what `Recommender.recommend` takes)."""
        return self.model_dump(exclude_none=True)


class RequestError(ValueError):
    """A request that does not fit the schema; the message names the line and the field."""


def parse_request(data: Any, where: str = "request") -> dict[str, Any]:
    try:
        return Request.model_validate(data).to_plain()
    except ValidationError as exc:
        problems = "; ".join(
            f"field {'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise RequestError(f"{where}: {problems}") from None


def read_requests(path: str | Path) -> list[dict[str, Any]]:
    """Every request of a JSONL file, or a `RequestError` naming the file, line and field."""
    path = Path(path)
    if not path.exists():
        raise RequestError(f"requests file {path} does not exist")
    requests = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RequestError(f"{path.name}, line {number}: not valid JSON ({exc.msg})") from None
        requests.append(parse_request(data, f"{path.name}, line {number}"))
    return requests


def parse_requests(items: Iterable[Any]) -> list[dict[str, Any]]:
    return [parse_request(item, f"request {i + 1}") for i, item in enumerate(items)]

"""One set of field limits (`recsys_tasks.limits`) for the pipeline and the API: what extract accepts,
the API accepts too, and the other way round."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from recsys_tasks import limits
from recsys_tasks.config import ExtractConfig
from recsys_tasks.data.sources import DataValidationError, load_source
from recsys_tasks.data.validate import LIMITS
from recsys_tasks.model import requests
from recsys_tasks.model.requests import Profile, Request
from recsys_tasks.serving.schemas import ItemIn

# (API model, field) -> (snapshot table, column) holding the same value
SAME_FIELD: dict[tuple[type[BaseModel], str], tuple[str, str]] = {
    (ItemIn, "item_id"): ("items", "item_id"),
    (ItemIn, "title"): ("items", "title"),
    (ItemIn, "description"): ("items", "description"),
    (ItemIn, "entity_id"): ("links", "entity_id"),
    (Request, "user_id"): ("users", "user_id"),
    (Profile, "gender"): ("users", "gender"),
    (Profile, "occupation"): ("users", "occupation"),
    (Profile, "zip_code"): ("users", "zip_code"),
}


# the fewest other fields each model needs
REQUIRED: dict[type[BaseModel], dict[str, str]] = {ItemIn: {"item_id": "1"}, Request: {"request_id": "r"}, Profile: {}}


@pytest.mark.parametrize(("model", "field"), list(SAME_FIELD), ids=[f"{m.__name__}.{f}" for m, f in SAME_FIELD])
def test_the_api_accepts_exactly_what_the_pipeline_accepts(model: type[BaseModel], field: str) -> None:
    """The API's longest accepted value of each field is the pipeline's limit for the same column."""
    table, column = SAME_FIELD[model, field]
    limit = LIMITS[table][column]
    assert _accepts(lambda: model(**{**REQUIRED[model], field: "x" * limit}))
    assert not _accepts(lambda: model(**{**REQUIRED[model], field: "x" * (limit + 1)}))


def test_the_request_schema_uses_the_shared_limits() -> None:
    for name in ("MAX_ID", "MAX_TEXT", "MAX_PROFILE_FIELD", "MAX_HISTORY", "MAX_K"):
        assert getattr(requests, name) == getattr(limits, name), name


def test_genres_are_capped_alike() -> None:
    most = [f"{i:0{limits.MAX_GENRES}d}" for i in range(limits.MAX_GENRES)]
    assert ItemIn(item_id="1", genres=most).genres == most
    for bad in (most + ["x"], ["g" * (limits.MAX_GENRES + 1)]):
        with pytest.raises(ValidationError):
            ItemIn(item_id="1", genres=bad)


@pytest.mark.parametrize("length", [limits.MAX_TITLE, limits.MAX_TITLE + 1])
def test_a_title_the_api_refuses_extract_refuses_too(
    length: int, tiny_csv_dir: Path, write_variant: Callable[..., Path]
) -> None:
    title = "T" * length
    write_variant(tiny_csv_dir / "items.csv", cells={(0, "title"): title})
    api_accepts = _accepts(lambda: ItemIn(item_id="1", title=title))
    pipeline_accepts = _accepts(lambda: load_and_validate(tiny_csv_dir))
    assert api_accepts == pipeline_accepts == (length <= limits.MAX_TITLE)


def load_and_validate(directory: Path) -> Any:
    from recsys_tasks.data.validate import validate

    return validate(load_source(str(directory)), ExtractConfig())


def _accepts(call: Callable[[], Any]) -> bool:
    try:
        call()
    except (ValidationError, DataValidationError):
        return False
    return True

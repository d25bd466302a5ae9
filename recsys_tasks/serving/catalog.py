"""Items added over the API: their schema, and the log that makes them outlive the process.

An item is posted with the dataset's field names (``movie_title``, ``release_year``, ``class``)
or the plain ones (``title``, ``year``, ``genres``); either way it becomes a catalog row
(item_id, title, year, genres "|"-joined, description, entity_id). Every accepted item is
appended to a JSON-lines log under the workdir, with its text vector (float32, base64) and the
text model that made it, so a restart, or a new champion, replays the log instead of re-encoding
(a different text model re-encodes). Only JSON is read back: nothing is unpickled or evaluated.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from recsys_tasks.model.requests import MAX_TEXT

log = logging.getLogger(__name__)

MAX_ITEMS_PER_POST = 1000
MAX_ID = 256
ALIASES = {"title": "movie_title", "year": "release_year", "genres": "class"}


class ItemIn(BaseModel):
    """A catalog item to add or replace (a known ``item_id`` is replaced as a whole)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    item_id: str = Field(min_length=1, max_length=MAX_ID)
    title: str | None = Field(None, max_length=1000, validation_alias=AliasChoices("title", "movie_title"))
    year: int | None = Field(None, ge=1800, le=2200, validation_alias=AliasChoices("year", "release_year"))
    genres: list[str] | None = Field(None, max_length=64, validation_alias=AliasChoices("genres", "class"))
    description: str | None = Field(None, max_length=MAX_TEXT)
    entity_id: str | None = Field(None, max_length=MAX_ID)

    @model_validator(mode="before")
    @classmethod
    def _one_name_per_field(cls, data: Any) -> Any:
        if isinstance(data, dict):
            both = [f"{plain}/{dataset}" for plain, dataset in ALIASES.items() if plain in data and dataset in data]
            if both:
                raise ValueError(f"give each field once, under one name: {', '.join(both)}")
        return data

    @field_validator("genres", mode="before")
    @classmethod
    def _split_genres(cls, value: Any) -> Any:
        """"Action|Sci-Fi" (the CSV form), "Action Sci-Fi" (RecBole's ``class``) or a list."""
        if isinstance(value, str):
            return value.split("|") if "|" in value else value.split()
        return value

    @field_validator("genres")
    @classmethod
    def _clean_genres(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        genres = [g.strip() for g in value if g.strip()]
        bad = [g for g in genres if "|" in g or len(g) > 64]
        if bad:
            raise ValueError(f"a genre may not contain '|' or exceed 64 characters: {bad[:3]}")
        return list(dict.fromkeys(genres))

    def to_record(self) -> dict[str, Any]:
        """The catalog row (the snapshot's column names)."""
        return {"item_id": self.item_id, "title": self.title or "", "year": self.year,
                "genres": "|".join(self.genres or []), "description": self.description or "",
                "entity_id": self.entity_id or ""}


class ItemStatus(BaseModel):
    item_id: str
    status: str = Field(description="added or updated")
    kg: str = Field(description="where the KG part came from: item (its own node), entity (the trained item "
                                "linked to entity_id) or none (zeros)")


class ItemsOut(BaseModel):
    items: list[ItemStatus]
    catalog_size: int
    model_version: str


class CatalogLog:
    """Append-only JSON lines, one per accepted item: its record, text model and text vector."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, records: list[dict[str, Any]], text_model: str, vectors: np.ndarray) -> None:
        """Write and fsync before the items are served, so an acknowledged item survives a crash."""
        lines = [json.dumps({"item": r, "text_model": text_model, "at": time.time(),
                             "vector": base64.b64encode(np.asarray(v, "<f4").tobytes()).decode("ascii")},
                            default=_plain) + "\n" for r, v in zip(records, vectors)]
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.writelines(lines)
                handle.flush()
                os.fsync(handle.fileno())

    def read(self, start: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Entries from line ``start`` on, and the line count to pass as ``start`` next time.

        A line that does not parse (a write cut short by a crash) is skipped with a warning.
        """
        entries, count = [], 0
        for count, line in enumerate(self._lines(), start=1):
            if count <= start:
                continue
            try:
                entry = json.loads(line)
                entry["vector"] = np.frombuffer(base64.b64decode(entry["vector"]), "<f4").astype(np.float32)
                entries.append(entry)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s, line %d: skipped (%s)", self.path, count, exc)
        return entries, max(count, start)

    def _lines(self) -> Iterator[str]:
        with self._lock:
            if not self.path.exists():
                return iter(())
            text = self.path.read_text(encoding="utf-8")
        return iter(text.splitlines())


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

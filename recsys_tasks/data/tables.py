"""Raw tables as read from a source: strings only, with where each came from, so that validation
can name the file (or table), column and line (or row) of a problem."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

# Canonical column names, and the aliases accepted for them (RecBole ML-100K names first).
ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "interactions": {"user_id": (), "item_id": (), "rating": (), "timestamp": ()},
    "users": {"user_id": (), "age": (), "gender": (), "occupation": (), "zip_code": ("zip",)},
    "items": {
        "item_id": (),
        "title": ("movie_title", "name"),
        "year": ("release_year",),
        "genres": ("class", "genre", "categories"),
        "description": ("overview", "plot"),
    },
    "kg": {"head_id": ("head",), "relation_id": ("relation",), "tail_id": ("tail",)},
    "links": {"item_id": (), "entity_id": ("entity",)},
}
REQUIRED = {
    "interactions": ("user_id", "item_id", "rating", "timestamp"),
    "users": ("user_id",),
    "items": ("item_id",),
    "kg": ("head_id", "relation_id", "tail_id"),
    "links": ("item_id", "entity_id"),
}
OPTIONAL_TABLES = ("kg", "links")


class DataValidationError(ValueError):
    """Input data that cannot be used; the message names the file, column and row."""


@dataclass(frozen=True)
class RawTable:
    """One input file as strings; ``line_offset`` maps a row index to its line in the file."""

    name: str
    path: Path
    frame: pd.DataFrame
    line_offset: int = 2  # header on line 1, first row on line 2
    row_offset: int = 0  # rows before this piece of the table (a chunk of a streamed table)
    streamed: ClassVar[bool] = False  # read in chunks as validation asks (a database cursor), once

    @property
    def label(self) -> str:
        """What messages call this table: the file's name."""
        return self.path.name

    def where(self, row: int | None = None, column: str | None = None) -> str:
        parts = [self.label]
        if column is not None:
            parts.append(f"column {column!r}")
        if row is not None:
            row += self.row_offset
            parts.append(f"row {row + 1} (line {row + self.line_offset})")
        return ", ".join(parts)

    def pieces(self) -> Iterator[RawTable]:
        """The table in row-numbered pieces, read once: here the whole frame; a streamed table, its chunks."""
        yield self

    def close(self) -> None:
        """Let go of what a streamed table holds open (a database cursor); nothing for a file."""


@dataclass(frozen=True)
class RawTables:
    source: str
    tables: Mapping[str, RawTable] = field(default_factory=dict)  # read-only: a SQL source passes SqlTables
    info: dict[str, Any] = field(default_factory=dict)  # added to the extract report (e.g. incremental counts)

    def __getitem__(self, name: str) -> RawTable:
        return self.tables[name]

    def get(self, name: str) -> RawTable | None:
        return self.tables.get(name)

    def close(self) -> None:
        """Let go of every streamed table's cursor (and its database transaction)."""
        for table in self.tables.values():
            table.close()

    def __enter__(self) -> RawTables:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def column_names(name: str, columns: list[str], label: str) -> dict[str, str]:
    """``{column as found: canonical name}`` for table ``name``'s known columns (aliases resolved);
    raises naming ``label`` when a required column is missing."""
    found = {c: c for c in columns if c in ALIASES[name]}
    for canonical, aliases in ALIASES[name].items():
        if canonical in found:
            continue
        for alias in aliases:
            if alias in columns:
                found[alias] = canonical
                break
    missing = [c for c in REQUIRED[name] if c not in found.values()]
    if missing:
        raise DataValidationError(f"{label}: missing required column(s) {missing}; found {list(columns)}")
    return found


def canonical_columns(name: str, frame: pd.DataFrame, label: str) -> pd.DataFrame:
    rename = {k: v for k, v in column_names(name, list(frame.columns), label).items() if k != v}
    return frame.rename(columns=rename)

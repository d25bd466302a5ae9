"""SQL source: the users, items, interactions (and optional kg, links) tables of a database.

``extract.source`` is a SQLAlchemy URI (``postgresql+psycopg2://user@host/db``,
``sqlite:///data.db``) or ``sql``, which takes the URI from ``RECSYS_SOURCE_URI`` so that
credentials stay out of the config; in Airflow the DAG turns ``sql:<connection id>`` into a URI.
Tables and columns have the CSV source's names (and its aliases). Rows are read in key order
(interactions by timestamp, user, item; users and items by id) and every value becomes text, so
the one validation path names the table, column and row (with its key) of a bad value.

Incremental extraction: with ``extract.previous_snapshot`` (an earlier extract directory), only
the interactions newer than that snapshot's latest timestamp are read and appended to its
interactions; users, items, kg and links are read whole (they are small, and new interactions
refer to new users and items); the merged tables are then validated as one.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from recsys_tasks.data.tables import OPTIONAL_TABLES, DataValidationError, RawTable, RawTables, column_names

ENV_URI = "RECSYS_SOURCE_URI"
SQL = "sql"
TABLES = ("interactions", "users", "items", "kg", "links")
# Reading order: deterministic whatever the database's physical order (the fingerprint sees row order).
KEYS = {
    "interactions": ("timestamp", "user_id", "item_id"),
    "users": ("user_id",),
    "items": ("item_id",),
    "kg": ("head_id", "relation_id", "tail_id"),
    "links": ("item_id", "entity_id"),
}
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SNAPSHOT_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


@dataclass(frozen=True)
class SqlTable(RawTable):
    """A database table as text. ``path`` holds the table's name; the first ``previous_rows``
    rows came from the previous snapshot ``previous`` (incremental extraction)."""

    keys: tuple[str, ...] = ()
    previous_rows: int = 0
    previous: str = ""

    @property
    def label(self) -> str:
        return f"table {self.path.name!r}"

    def where(self, row: int | None = None, column: str | None = None) -> str:
        parts = [self.label]
        if column is not None:
            parts.append(f"column {column!r}")
        if row is not None:
            key = ", ".join(f"{k}={self.frame[k].iloc[row]!r}" for k in self.keys if k != column)
            key = f" ({key})" if key else ""
            if row < self.previous_rows:
                parts.append(f"row {row + 1} of the previous snapshot {self.previous}{key}")
            else:
                parts.append(f"row {row - self.previous_rows + 1}{key}")
        return ", ".join(parts)


def is_sql_source(source: str) -> bool:
    """``sql``, ``sql:<connection id>`` or anything shaped like ``dialect[+driver]://...``."""
    return source == SQL or source.startswith(SQL + ":") or bool(_URI.match(source))


def resolve_uri(source: str) -> str:
    """The SQLAlchemy URI behind a SQL source (Airflow connection ids are resolved by the DAG)."""
    if source == SQL:
        uri = os.environ.get(ENV_URI, "").strip()
        if not uri:
            raise DataValidationError(f"data source 'sql' reads the database URI from {ENV_URI}, which is not set")
        return uri
    if source.startswith(SQL + ":"):
        raise DataValidationError(
            f"data source {source!r} names an Airflow connection, which only the DAG resolves; outside Airflow "
            f"use a SQLAlchemy URI, or 'sql' with the URI in {ENV_URI}"
        )
    return source


def display_uri(uri: str) -> str:
    """The URI with its password masked: what reports, logs and messages show."""
    import sqlalchemy as sa

    try:
        return sa.make_url(uri).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", uri)


def load_sql(uri: str, previous_snapshot: str | Path | None = None) -> RawTables:
    """Read the tables at ``uri`` as text, in one consistent transaction; see the module docstring."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    label = display_uri(uri)
    since, previous = _previous(Path(previous_snapshot)) if previous_snapshot else (None, None)
    try:
        engine = sa.create_engine(uri, poolclass=NullPool)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise DataValidationError(f"data source {label!r} is not a usable SQLAlchemy URI: {exc}") from None
    # One snapshot of the database: interactions must not refer to users inserted after `users` was read.
    options = {"isolation_level": "REPEATABLE READ"} if engine.dialect.name in ("postgresql", "mysql") else {}
    try:
        with engine.connect().execution_options(**options) as conn, conn.begin():
            present = set(sa.inspect(conn).get_table_names())
            missing = [t for t in TABLES if t not in present and t not in OPTIONAL_TABLES]
            if missing:
                raise DataValidationError(
                    f"{label}: missing table(s) {missing}; a SQL source needs tables interactions, users and items "
                    f"(kg and links are optional); found {sorted(present)}"
                )
            tables = {
                name: _read(conn, name, since if name == "interactions" else None) for name in TABLES if name in present
            }
    except sa.exc.SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DataValidationError(f"{label}: cannot read the database: {first}") from None
    finally:
        engine.dispose()
    info: dict[str, Any] = {}
    if previous is not None:
        new = tables["interactions"]
        old = previous["frame"]
        merged = pd.concat([old, new.frame[list(_SNAPSHOT_COLUMNS)]], ignore_index=True)
        tables["interactions"] = SqlTable(
            "interactions", new.path, merged, keys=new.keys, previous_rows=len(old), previous=previous["label"]
        )
        info = {
            "previous_snapshot": previous["label"],
            "incremental_since": since,
            "n_previous_interactions": len(old),
            "n_new_interactions": len(new.frame),
        }
    return RawTables(label, tables, info)


def _read(conn, name: str, since: int | None) -> SqlTable:
    """One table in key order as text; with ``since``, only interactions newer than it."""
    import sqlalchemy as sa

    table = sa.Table(name, sa.MetaData(), autoload_with=conn)
    canonical = column_names(name, [c.name for c in table.columns], f"table {name!r}")  # found -> canonical
    actual = {v: k for k, v in canonical.items()}  # canonical -> found
    keys = tuple(k for k in KEYS[name] if k in actual)
    query = sa.select(*[c.label(canonical.get(c.name, c.name)) for c in table.columns])
    query = query.order_by(*[table.c[actual[k]] for k in keys])
    post_filter = False
    if since is not None:
        column = table.c[actual["timestamp"]]
        bound = _bound(column.type, since)
        if bound is None:  # a text column: compare after parsing, in Python
            post_filter = True
        else:
            query = query.where(column > bound)
    frame = pd.read_sql(query, conn)
    frame = pd.DataFrame({c: _as_text(frame[c]) for c in frame.columns}, index=frame.index)
    if post_filter:
        frame = frame[~(_epoch_seconds(frame["timestamp"]) <= since)].reset_index(drop=True)
    return SqlTable(name, Path(name), frame, keys=keys)


def _bound(column_type, since: int) -> Any:
    """``since`` (epoch seconds) in the timestamp column's own type; None for text columns."""
    import sqlalchemy as sa

    if isinstance(column_type, sa.DateTime):
        moment = dt.datetime.fromtimestamp(since, dt.UTC)
        return moment if column_type.timezone else moment.replace(tzinfo=None)  # naive columns hold UTC
    if isinstance(column_type, (sa.Integer, sa.Numeric, sa.Float)):
        return since
    return None


def _previous(directory: Path) -> tuple[int, dict[str, Any]]:
    """The previous snapshot's interactions (as text) and its latest timestamp."""
    inter = directory / "interactions.parquet"
    if not inter.exists():
        raise DataValidationError(
            f"extract.previous_snapshot {str(directory)!r} is not an extract snapshot (no interactions.parquet)"
        )
    report = directory / "report.json"
    if report.exists() and json.loads(report.read_text()).get("sample_users"):
        raise DataValidationError(
            f"extract.previous_snapshot {str(directory)!r} holds a sample of the users; "
            f"incremental extraction needs a full snapshot (sample_users 0)"
        )
    frame = pd.read_parquet(inter, columns=list(_SNAPSHOT_COLUMNS))
    if frame.empty:
        raise DataValidationError(f"extract.previous_snapshot {str(directory)!r} has no interactions")
    text = pd.DataFrame({c: _as_text(frame[c]) for c in _SNAPSHOT_COLUMNS})
    return int(frame["timestamp"].max()), {"frame": text, "label": str(directory)}


def _epoch_seconds(values: pd.Series) -> pd.Series:
    """Epoch seconds of text timestamps (numbers or ISO 8601); NaN where unparseable."""
    numeric = pd.to_numeric(values, errors="coerce")
    text = numeric.isna()
    if text.any():
        parsed = pd.to_datetime(values[text], errors="coerce", utc=True, format="ISO8601")
        numeric[text] = (parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return numeric


def _as_text(series: pd.Series) -> pd.Series:
    """Database values as the text a CSV file would hold (NULL -> "", 3.0 -> "3", dates -> ISO 8601)."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(series.dtype):
        return series.dt.strftime("%Y-%m-%dT%H:%M:%S").fillna("").astype(str)
    return series.map(_cell, na_action=None).astype(str)


def _cell(value: Any) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, decimal.Decimal):
        return str(int(value)) if value == value.to_integral_value() else str(value)
    if isinstance(value, (dt.datetime, pd.Timestamp)):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)

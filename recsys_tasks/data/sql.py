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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

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
CHUNK_ROWS = 500_000  # interactions per chunk (`ExtractConfig.sql_chunk_rows`)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SNAPSHOT_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


@dataclass(frozen=True)
class SqlTable(RawTable):
    """A database table (or a chunk of one) as text. ``path`` holds the table's name; ``previous`` names the
    previous snapshot when these rows came from it (incremental extraction)."""

    keys: tuple[str, ...] = ()
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
            of = f" of the previous snapshot {self.previous}" if self.previous else ""
            parts.append(f"row {row + self.row_offset + 1}{of}{key}")
        return ", ".join(parts)


@dataclass(frozen=True)
class StreamedSqlTable(SqlTable):
    """The interactions, read once in chunks: the previous snapshot's rows (incremental extraction), then the
    database's through a server-side cursor. ``frame`` is empty (the columns only); `pieces` yields the chunks
    and, when they are done, writes ``n_new_interactions`` into ``counts`` (the extract report)."""

    streamed: ClassVar[bool] = True
    previous_chunks: Iterator[pd.DataFrame] = iter(())
    chunks: Iterator[pd.DataFrame] = iter(())
    counts: dict[str, Any] = field(default_factory=dict)

    def pieces(self) -> Iterator[RawTable]:
        offset = 0
        for frame in self.previous_chunks:
            yield SqlTable(self.name, self.path, frame, keys=self.keys, row_offset=offset, previous=self.previous)
            offset += len(frame)
        offset = 0
        for frame in self.chunks:
            yield SqlTable(self.name, self.path, frame, keys=self.keys, row_offset=offset)
            offset += len(frame)
        self.counts["n_new_interactions"] = offset

    def close(self) -> None:
        for chunks in (self.previous_chunks, self.chunks):
            close = getattr(chunks, "close", None)
            if close is not None:
                close()


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


def load_sql(uri: str, previous_snapshot: str | Path | None = None, chunk_rows: int = CHUNK_ROWS) -> RawTables:
    """Read the tables at ``uri`` as text, in one consistent transaction; see the module docstring. Users,
    items, kg and links are read here; the interactions stream in chunks of ``chunk_rows`` rows as
    validation asks for them (the transaction stays open until they are done or the table is closed)."""
    if chunk_rows < 1:
        raise DataValidationError(f"extract.sql_chunk_rows must be at least 1, got {chunk_rows}")
    label = display_uri(uri)
    since, previous = _previous(Path(previous_snapshot)) if previous_snapshot else (None, None)
    session = _session(uri, label, since, chunk_rows)
    tables, keys, columns = next(session)
    info: dict[str, Any] = {}
    previous_chunks: Iterator[pd.DataFrame] = iter(())
    if previous is not None:
        previous_chunks = _snapshot_chunks(previous, chunk_rows)
        info = {
            "previous_snapshot": str(previous),
            "incremental_since": since,
            "n_previous_interactions": pq.ParquetFile(previous / "interactions.parquet").metadata.num_rows,
        }
    tables["interactions"] = StreamedSqlTable(
        "interactions",
        Path("interactions"),
        pd.DataFrame({c: pd.Series(dtype=str) for c in columns}),
        keys=keys,
        previous=str(previous) if previous is not None else "",
        previous_chunks=previous_chunks,
        chunks=session,
        counts=info if previous is not None else {},
    )
    return RawTables(label, tables, info)


def _session(uri: str, label: str, since: int | None, chunk_rows: int) -> Iterator[Any]:
    """One transaction: yields the small tables (and the interactions' keys and columns) first, then the
    interactions in chunks of text, read through a server-side cursor."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

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
            query, keys, post_filter = _query(conn, "interactions", since)
            small = {name: _read(conn, name) for name in TABLES if name in present and name != "interactions"}
            yield small, keys, [c.name for c in query.selected_columns]
            result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(query)
            columns = list(result.keys())
            for rows in result.partitions():
                frame = _text_frame(pd.DataFrame.from_records(rows, columns=columns, coerce_float=True))
                if post_filter:
                    frame = frame[~(_epoch_seconds(frame["timestamp"]) <= since)].reset_index(drop=True)
                yield frame
    except sa.exc.SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DataValidationError(f"{label}: cannot read the database: {first}") from None
    finally:
        engine.dispose()


def _query(conn: Any, name: str, since: int | None) -> tuple[Any, tuple[str, ...], bool]:
    """The select of one table in key order with canonical column names, its keys, and whether ``since``
    (newer interactions only) must be applied after reading (a text timestamp column)."""
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
    return query, keys, post_filter


def _read(conn: Any, name: str) -> SqlTable:
    """One (small) table in key order as text."""
    query, keys, _ = _query(conn, name, None)
    return SqlTable(name, Path(name), _text_frame(pd.read_sql(query, conn)), keys=keys)


def _text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({c: _as_text(frame[c]) for c in frame.columns}, index=frame.index)


def _bound(column_type, since: int) -> Any:
    """``since`` (epoch seconds) in the timestamp column's own type; None for text columns."""
    import sqlalchemy as sa

    if isinstance(column_type, sa.DateTime):
        moment = dt.datetime.fromtimestamp(since, dt.UTC)
        return moment if column_type.timezone else moment.replace(tzinfo=None)  # naive columns hold UTC
    if isinstance(column_type, (sa.Integer, sa.Numeric, sa.Float)):
        return since
    return None


def _previous(directory: Path) -> tuple[int, Path]:
    """The previous snapshot's folder and its latest timestamp."""
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
    latest = pc.max(pq.read_table(inter, columns=["timestamp"])["timestamp"]).as_py()
    if latest is None:
        raise DataValidationError(f"extract.previous_snapshot {str(directory)!r} has no interactions")
    return int(latest), directory


def _snapshot_chunks(directory: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The previous snapshot's interactions as text, ``chunk_rows`` at a time."""
    parquet = pq.ParquetFile(directory / "interactions.parquet")
    for batch in parquet.iter_batches(batch_size=chunk_rows, columns=list(_SNAPSHOT_COLUMNS)):
        yield _text_frame(batch.to_pandas())


def _epoch_seconds(values: pd.Series) -> pd.Series:
    """Epoch seconds of text timestamps (numbers or ISO 8601); NaN where unparseable."""
    numeric = pd.to_numeric(values, errors="coerce")
    text = numeric.isna()
    if text.any():
        parsed = pd.to_datetime(values[text], errors="coerce", utc=True, format="ISO8601")
        numeric[text] = (parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return numeric


def _as_text(series: pd.Series) -> pd.Series:
    """Database values as the text a CSV file would hold (NULL -> "", 3.0 -> "3", dates -> ISO 8601),
    column at a time; only columns of mixed Python objects (decimals, dates) go value by value."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(series.dtype):
        return series.dt.strftime("%Y-%m-%dT%H:%M:%S").fillna("").astype(str)
    if pd.api.types.is_float_dtype(series.dtype):
        return _float_text(series)
    if pd.api.types.is_integer_dtype(series.dtype) and not series.hasnans:
        return series.astype(str)
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        return series.fillna("").astype(str)
    return series.map(_cell, na_action=None).astype(str)


def _float_text(series: pd.Series) -> pd.Series:
    """Floats as `_cell` writes them: whole numbers without ".0", others as repr(), NaN as ""."""
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    text = np.full(len(values), "", dtype=object)
    known = ~np.isnan(values)
    whole = known & (np.abs(values) < 2.0**53) & (np.mod(values, 1.0) == 0)
    text[whole] = values[whole].astype(np.int64).astype(str)
    text[known & ~whole] = pd.Series(values[known & ~whole]).astype(str).to_numpy(dtype=object)
    return pd.Series(text, index=series.index, dtype=str)


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

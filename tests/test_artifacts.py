"""Stage outputs: ``atomic_dir`` never leaves half an artifact; ``StageResult`` and JSON helpers round-trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from recsys_tasks.artifacts import StageResult, atomic_dir, finish, read_json, write_json


def _leftovers(parent: Path, name: str) -> list[str]:
    """Temporary or backup siblings of ``parent / name`` that atomic_dir may have left."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def previous(tmp_path: Path) -> Path:
    """An output directory already holding a complete earlier result."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "old.txt").write_text("old")
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01")
    return out


# ---------------------------------------------------------------- atomic_dir
def test_success_creates_the_directory_with_the_content(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "er" / "out"
    with atomic_dir(out) as tmp:
        assert tmp != out and tmp.parent == out.parent and tmp.is_dir()
        assert not out.exists()  # nothing visible until the block succeeds
        (tmp / "a.txt").write_text("a")
    assert (out / "a.txt").read_text() == "a"
    assert _leftovers(out.parent, "out") == []


def test_success_replaces_the_previous_content(previous: Path) -> None:
    with atomic_dir(previous) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _snapshot(previous) == {"new.txt": b"new"}  # nothing of the old result is mixed in
    assert _leftovers(previous.parent, "out") == []


def test_exception_leaves_no_temp_dir_and_no_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(out) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert not out.exists()
    assert _leftovers(tmp_path, "out") == []


def test_exception_keeps_the_previous_content(previous: Path) -> None:
    before = _snapshot(previous)
    with pytest.raises(ValueError):
        with atomic_dir(previous) as tmp:
            (tmp / "old.txt").write_text("half-written replacement")
            raise ValueError("bad input")
    assert _snapshot(previous) == before
    assert _leftovers(previous.parent, "out") == []


def test_keyboard_interrupt_is_cleaned_up_too(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out):
            raise KeyboardInterrupt
    assert not out.exists() and _leftovers(tmp_path, "out") == []


# ---------------------------------------------------------------- StageResult and finish
def test_finish_rebases_paths_and_writes_result_json(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "table.parquet").write_bytes(b"x")
        result = finish(
            StageResult(
                "demo",
                str(out),
                {"table": str(tmp / "table.parquet"), "elsewhere": "/data/x"},
                {"n": 3.0},
                {"holdout": True},
            ),
            tmp,
        )
    assert result.artifacts == {"table": str(out / "table.parquet"), "elsewhere": "/data/x"}
    assert result.path("table").read_bytes() == b"x"
    assert StageResult.load(out) == result


def test_result_json_holds_paths_inside_the_directory_relative_to_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "t.bin").write_bytes(b"x")
        finish(
            StageResult("demo", str(out), {"t": str(tmp / "sub" / "t.bin"), "dir": str(tmp), "elsewhere": "/data/x"}),
            tmp,
        )
    stored = read_json(out / "result.json")
    assert stored["out_dir"] == "."
    assert stored["artifacts"] == {"t": "sub/t.bin", "dir": ".", "elsewhere": "/data/x"}
    assert str(tmp_path) not in (out / "result.json").read_text()  # nothing ties it to where it was written


def test_paths_already_under_the_final_directory_are_stored_relative_too(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        result = finish(StageResult("demo", str(out), {"t": str(out / "t.bin")}), tmp)
    assert result.artifacts == {"t": str(out / "t.bin")}
    assert read_json(out / "result.json")["artifacts"] == {"t": "t.bin"}


def test_a_moved_directory_loads_with_paths_where_it_is_now(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "a" / "demo"
    with atomic_dir(out) as tmp:
        (tmp / "t.bin").write_bytes(b"x")
        written = finish(StageResult("demo", str(out), {"t": str(tmp / "t.bin"), "elsewhere": "/data/x"}), tmp)
    moved = tmp_path / "elsewhere" / "demo"
    moved.parent.mkdir()
    (tmp_path / "runs" / "a" / "demo").rename(moved)
    loaded = StageResult.load(moved)
    assert loaded.out_dir == str(moved) and loaded.path("t").read_bytes() == b"x"
    assert loaded.artifacts["elsewhere"] == "/data/x"  # outside the directory: kept as it was
    assert (loaded.stage, loaded.metrics, loaded.info) == (written.stage, written.metrics, written.info)


def test_a_result_json_with_absolute_paths_still_loads(tmp_path: Path) -> None:
    """Directories written before paths were stored relative keep loading as they were."""
    (tmp_path / "old").mkdir()
    write_json(
        tmp_path / "old" / "result.json",
        {"stage": "demo", "out_dir": "/was/here", "artifacts": {"t": "/was/here/t.bin"}, "metrics": {}, "info": {}},
    )
    loaded = StageResult.load(tmp_path / "old")
    assert loaded.artifacts == {"t": "/was/here/t.bin"} and loaded.out_dir == str(tmp_path / "old")


def test_a_moved_tiny_run_loads_and_its_model_answers(
    tmp_path: Path, tiny_snapshot: StageResult, tiny_text: StageResult, tiny_bundle: StageResult
) -> None:
    """A run's stage directories copied elsewhere, then moved again: every artifact resolves inside the
    copy (none points back to the original) and the bundle loads and recommends from there."""
    from recsys_tasks.data.dataset import Dataset
    from recsys_tasks.model.recommender import Recommender

    run = tmp_path / "run"
    for result in (tiny_snapshot, tiny_text, tiny_bundle):
        shutil.copytree(result.out_dir, run / result.stage)
    moved = tmp_path / "moved" / "run"
    moved.parent.mkdir()
    run.rename(moved)
    for original in (tiny_snapshot, tiny_text, tiny_bundle):
        loaded = StageResult.load(moved / original.stage)
        assert set(loaded.artifacts) == set(original.artifacts) and loaded.artifacts, original.stage
        for name in loaded.artifacts:
            assert loaded.path(name).exists() and loaded.path(name).is_relative_to(moved), (original.stage, name)
    snapshot = StageResult.load(moved / "extract")
    assert Dataset.load(snapshot.out_dir).fingerprint() == tiny_snapshot.info["fingerprint"]
    rec = Recommender.load(StageResult.load(moved / "finetune").path("bundle"))
    [answer] = rec.recommend([{"request_id": "r", "profile": {"age": 30}, "k": 3}])
    assert len(answer["items"]) == 3


def test_stage_result_dict_round_trip_is_json() -> None:
    result = StageResult("extract", "/runs/1", {"a": "/runs/1/a"}, {"n": 1.0}, {"fingerprint": "abc", "ok": True})
    data = result.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert StageResult.from_dict(data) == result


# ---------------------------------------------------------------- JSON helpers
def test_write_json_handles_numpy_values_and_paths(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "x.json",
        {
            "b": np.int64(3),
            "a": np.float32(0.5),
            "arr": np.arange(3),
            "matrix": np.eye(2, dtype=int),
            "flag": np.bool_(True),
            "path": Path("/tmp/p"),
        },
    )
    assert read_json(path) == {
        "a": 0.5,
        "arr": [0, 1, 2],
        "b": 3,
        "flag": True,
        "matrix": [[1, 0], [0, 1]],
        "path": "/tmp/p",
    }
    text = path.read_text()
    assert text.index('"a"') < text.index('"b"') and text.endswith("\n")  # sorted keys, stable diffs


def test_write_json_rejects_what_it_cannot_represent(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        write_json(tmp_path / "x.json", {"x": object()})

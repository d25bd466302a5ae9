"""``recsys`` in-process: ``run`` prints a JSON summary, ``recommend`` one response line per request,
and every bad input exits with code 2, a message naming the problem, and no trace in the workdir.

One workdir is trained once per module (``run`` on the session's tiny RecBole data, tiny dimensions,
conftest's tiny random BERT as the text model); the tests that must fail check that the champion it
registered stays where it was.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from tiny_pipeline import TINY_PIPELINE

from recsys_tasks.artifacts import StageResult
from recsys_tasks.cli import main
from recsys_tasks.config import PipelineConfig
from recsys_tasks.pipeline import run_pipeline
from recsys_tasks.registry.store import StoreError
from recsys_tasks.stages import STAGES

pytestmark = pytest.mark.slow  # one real training run; CI runs it anyway

TINY = [f"{key}={value}" for key, value in TINY_PIPELINE.items()]
SETS = [arg for s in TINY for arg in ("--set", s)]
MODEL_NAME = "recsys-cold-start"
TINY_ITEM_IDS = {str(i) for i in range(1, 16)}
RUN_ID = re.compile(r"cli_\d{8}T\d{6}_[0-9a-f]{8}")  # pipeline.new_run_id: UTC time and 8 random hex digits


@dataclass(frozen=True)
class Trained:
    workdir: Path
    data: Path
    summary: dict[str, Any]

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.workdir / 'mlflow.db'}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_bert: str) -> Trained:
    workdir = tmp_path_factory.mktemp("cli") / "work"
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("RECSYS_WORKDIR", raising=False)  # main() sets it from --workdir; restored afterwards
        mp.setenv("HF_HUB_OFFLINE", "1")
        with contextlib.redirect_stdout(out):
            code = main(
                ["run", "--data", str(tiny_data), "--workdir", str(workdir), *SETS, "--set", f"text.model={tiny_bert}"]
            )
    assert code == 0
    return Trained(workdir, tiny_data, json.loads(out.getvalue()))


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` writes ``RECSYS_WORKDIR``; monkeypatch puts the old value back after each test."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RECSYS_WORKDIR", raising=False)


def _run_files(workdir: Path) -> set[str]:
    runs = workdir / "runs"
    return {str(p.relative_to(runs)) for p in runs.rglob("*")} if runs.exists() else set()


def _registry_state(trained: Trained) -> tuple[str, int]:
    client = MlflowClient(tracking_uri=trained.uri, registry_uri=trained.uri)
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion").version
    return str(champion), len(client.search_model_versions(f"name='{MODEL_NAME}'"))


def _requests(path: Path, *requests: dict[str, Any] | str) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in requests))
    return path


# ---------------------------------------------------------------- run
def test_run_prints_json_summary(trained: Trained) -> None:
    summary = trained.summary
    assert summary["model_version"] == "1"
    # the MLflow run of this workflow run
    run = MlflowClient(tracking_uri=trained.uri).get_run(summary["mlflow_run_id"])
    assert run.info.run_name == Path(summary["run_dir"]).name == summary["run_id"]
    assert RUN_ID.fullmatch(summary["run_id"]), summary["run_id"]
    assert summary["promoted"] is True and summary["alias"] == "champion"
    assert summary["tracking_uri"] == trained.uri
    assert Path(summary["run_dir"]).parent == trained.workdir.resolve() / "runs"
    assert json.loads((Path(summary["run_dir"]) / "summary.json").read_text())["run_id"] == summary["run_id"]
    assert "cold_mean_ndcg" in summary["metrics"] and "table" not in summary
    assert (trained.workdir / "mlflow.db").is_file()


def test_run_records_every_stages_seconds(trained: Trained) -> None:
    seconds = trained.summary["stage_seconds"]
    assert list(seconds) == [stage.name for stage in STAGES]
    assert all(isinstance(s, float) and s >= 0 for s in seconds.values()), seconds
    written = json.loads((Path(trained.summary["run_dir"]) / "summary.json").read_text())
    assert written["stage_seconds"] == seconds


def test_the_run_used_the_text_model_it_was_given(trained: Trained, tiny_bert: str) -> None:
    assert StageResult.load(Path(trained.summary["run_dir"]) / "text_embed").info["model"] == tiny_bert


# ---------------------------------------------------------------- recommend
def test_recommend_prints_one_response_per_request(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = _requests(
        tmp_path / "requests.jsonl",
        {"request_id": "new", "profile": {"age": 30, "gender": "F"}, "text": "I like Drama.", "k": 3},
        "",  # blank lines are skipped
        {"request_id": "cand", "candidates": ["1", "2", "3"], "k": 2},
        {"request_id": "default-k"},
    )
    assert main(["recommend", "--workdir", str(trained.workdir), "--requests", str(requests), "--k", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    responses = [json.loads(line) for line in lines]
    assert [r["request_id"] for r in responses] == ["new", "cand", "default-k"]
    for response, k in zip(responses, (3, 2, 4)):
        assert set(response) == {"request_id", "items", "model_version"} | (
            {"intent"} if response["request_id"] == "new" else set()
        )
        assert response["model_version"] == "1"
        assert len(response["items"]) == k
        for item in response["items"]:
            assert (
                set(item) == {"item_id", "score", "reason", "title", "year", "genres"}
                and item["item_id"] in TINY_ITEM_IDS
            )
            assert isinstance(item["score"], float) and isinstance(item["reason"], str) and item["reason"]
        scores = [i["score"] for i in response["items"]]
        assert scores == sorted(scores, reverse=True)
    assert {i["item_id"] for i in responses[1]["items"]} <= {"1", "2", "3"}


def test_recommend_prints_the_reason_of_each_item(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Items 3 and 4 of the tiny KG share a director: with 3 in the history, 4 is explained by it
    (the tiny model's vectors are noise: their agreement, which a KG link needs, is not asked here)."""
    from recsys_tasks.explain import reasons

    monkeypatch.setattr(reasons, "RELATED_MIN", -1.0)
    requests = _requests(
        tmp_path / "r.jsonl", {"request_id": "kg", "history": [{"item_id": "3", "rating": 5}], "candidates": ["4"]}
    )
    assert main(["recommend", "--workdir", str(trained.workdir), "--requests", str(requests)]) == 0
    [response] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert response["items"] == [
        {
            "item_id": "4",
            "score": response["items"][0]["score"],
            "reason": "shares its director with Movie 3",
            "title": "Movie 4",
            "year": 1984,
            "genres": ["Action"],
        }
    ]


def test_recommend_with_an_explicit_model_version(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = _requests(tmp_path / "r.jsonl", {"request_id": "a", "k": 1})
    code = main(
        [
            "recommend",
            "--workdir",
            str(trained.workdir),
            "--model",
            f"models:/{MODEL_NAME}/1",
            "--requests",
            str(requests),
        ]
    )
    assert code == 0
    [response] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert response["model_version"] == "1" and len(response["items"]) == 1


@pytest.mark.parametrize(
    ("lines", "named"),
    [
        (['{"request_id": "a"}', '{"request_id": "b", '], ["r.jsonl", "line 2", "not valid JSON"]),
        (['{"request_id": "a", "k": 0}'], ["r.jsonl", "line 1", "field k"]),
        (['{"request_id": "a", "candidates": ["1", "zz99"]}'], ["candidates", "zz99"]),
        (['{"request_id": "a", "history": [{"item_id": "nope7"}]}'], ["history", "nope7"]),
    ],
    ids=["malformed-json", "bad-field", "unknown-candidate", "unknown-history-item"],
)
def test_recommend_rejects_bad_requests(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], named: list[str]
) -> None:
    requests = _requests(tmp_path / "r.jsonl", *lines)
    assert main(["recommend", "--workdir", str(trained.workdir), "--requests", str(requests)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    for word in named:
        assert word in captured.err


def test_recommend_rejects_unknown_model_uri(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = _requests(tmp_path / "r.jsonl", {"request_id": "a"})
    uri = "models:/no-such-model@champion"
    assert main(["recommend", "--workdir", str(trained.workdir), "--model", uri, "--requests", str(requests)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and uri in captured.err


def test_recommend_rejects_missing_requests_file(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "absent.jsonl"
    assert main(["recommend", "--workdir", str(trained.workdir), "--requests", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


# ---------------------------------------------------------------- run with bad input
def _bad_rating_dir(tiny_recbole_dir: Path, write_variant: Callable[..., Path]) -> Path:
    write_variant(tiny_recbole_dir / "tiny.inter", cells={(3, "rating"): "7"})
    return tiny_recbole_dir


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (lambda tmp, bad: ["--data", str(tmp / "no-such-dir")], ["no-such-dir", "does not exist"]),
        (lambda tmp, bad: ["--data", str(bad)], ["tiny.inter", "'rating'", "row 4", "'7'"]),
        (lambda tmp, bad: ["--set", "nosuch.key=1"], ["nosuch.key"]),
        (lambda tmp, bad: ["--set", "kg.epochs=many"], ["kg.epochs", "many"]),
    ],
    ids=["missing-dir", "bad-rating", "unknown-key", "bad-value"],
)
def test_failing_run_writes_nothing_and_keeps_the_champion(
    trained: Trained,
    tmp_path: Path,
    tiny_recbole_dir: Path,
    write_variant: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    args: Callable[[Path, Path], list[str]],
    named: list[str],
) -> None:
    bad = _bad_rating_dir(tiny_recbole_dir, write_variant)
    argv = ["run", "--workdir", str(trained.workdir), "--data", str(trained.data), *SETS, *args(tmp_path, bad)]
    files_before, registry_before = _run_files(trained.workdir), _registry_state(trained)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("recsys run: error:")
    for word in named:
        assert word in captured.err
    assert _run_files(trained.workdir) == files_before
    assert _registry_state(trained) == registry_before == ("1", 1)


# ---------------------------------------------------------------- the store is checked before any stage
def _closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_store_fails_before_any_stage_runs(
    tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run_pipeline` reads the champion first: the store's one-line error, and no stage ran (a stage
    writes its run directory; `run_pipeline` itself removes nothing, so none was made)."""
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    cfg = PipelineConfig().with_overrides({"extract.source": str(tiny_data), **TINY_PIPELINE})
    with pytest.raises(StoreError) as raised:
        run_pipeline(cfg, tmp_path / "work", run_id="down")
    message = str(raised.value)
    assert message.startswith(f"MLflow store {uri}: reading {MODEL_NAME}@champion failed: "), message
    assert "\n" not in message
    assert not (tmp_path / "work" / "runs").exists()

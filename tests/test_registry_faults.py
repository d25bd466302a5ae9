"""The register stage under faults, against a real MLflow store (issue 18).

- killed (SIGKILL, in a subprocess) after each step of `register.STEPS`: the store holds nothing
  or one version of that run, and registering the same workflow run again finishes it (one run,
  one version, the alias set, the MLflow run FINISHED); once finished, registering it again
  changes nothing;
- raising: the MLflow run ends FAILED, not RUNNING, and a re-run resumes and finishes it;
- a locked SQLite store and an unreachable tracking server: a one-line `StoreError` naming the
  store, and a promotion is never decided on the failed read.

The stages before register run once (conftest's tiny data and tiny random BERT, module scope); each
case has its own store.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from tiny_pipeline import TINY_PIPELINE

from recsys_tasks.artifacts import StageResult
from recsys_tasks.config import PipelineConfig
from recsys_tasks.pipeline import write_resolved_config
from recsys_tasks.registry import register as reg
from recsys_tasks.registry.store import CHALLENGER, CHAMPION, StoreError, alias_version, load_recommender
from recsys_tasks.stages import STAGES, RunContext, run_stage

pytestmark = pytest.mark.slow  # the tiny pipeline once, then a subprocess per step

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ("extract", "kg_embed", "text_embed", "finetune", "evaluate")
# Runs register with `_step` made to SIGKILL the process after the step named in argv.
KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from recsys_tasks.artifacts import StageResult
    from recsys_tasks.config import PipelineConfig
    from recsys_tasks.registry import register as reg

    config, run_dir, run_name, uri, step, upstream = sys.argv[1:]
    reg._step = lambda name: os.kill(os.getpid(), signal.SIGKILL) if name == step else None
    results = {s: StageResult.load(Path(run_dir) / s) for s in upstream.split(",")}
    reg.register(PipelineConfig.from_yaml(config), results, run_name=run_name, uri=uri)
""")


@dataclass(frozen=True)
class Trained:
    cfg: PipelineConfig
    config: Path  # the resolved config, for the subprocess
    run_dir: Path
    results: dict[str, StageResult]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_bert: str) -> Trained:
    base = tmp_path_factory.mktemp("faults")
    cfg = PipelineConfig().with_overrides({"extract.source": str(tiny_data), **TINY_PIPELINE, "text.model": tiny_bert})
    ctx = RunContext(cfg, "faults", base / "runs" / "faults", f"sqlite:///{base / 'unused.db'}")
    results: dict[str, StageResult] = {}
    for stage in STAGES:
        if stage.name in UPSTREAM:
            results[stage.name] = run_stage(stage, ctx, results)
    return Trained(cfg, write_resolved_config(cfg, base / "config"), ctx.run_dir, results)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh SQLite store; the CWD is a scratch folder (MLflow writes nothing there)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    yield f"sqlite:///{tmp_path / 'mlflow.db'}"


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _versions(uri: str, name: str) -> list[str]:
    return sorted(str(v.version) for v in _client(uri).search_model_versions(f"name = '{name}'"))


def _runs_of(uri: str, run_name: str) -> list:
    client = _client(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, f"tags.`{reg.RUN_TAG}` = '{run_name}'")


def _kill_at(trained: Trained, uri: str, step: str, run_name: str, cfg: Path | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RECSYS_WORKDIR")}
    argv = [str(cfg or trained.config), str(trained.run_dir), run_name, uri, step, ",".join(UPSTREAM)]
    done = subprocess.run(
        [sys.executable, "-c", KILLER, *argv],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path.cwd(),
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == -9, f"expected SIGKILL at {step}: rc {done.returncode}\n{done.stderr[-2000:]}"


def _closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------- killed at each step
@pytest.mark.parametrize("step", reg.STEPS)
def test_register_killed_at_each_step_is_finished_by_a_rerun(trained: Trained, store: str, step: str) -> None:
    name = trained.cfg.registry.model_name
    _kill_at(trained, store, step, "killed")
    left = _versions(store, name)
    assert len(left) <= 1  # nothing, or the one version a re-run must find
    summary = reg.register(trained.cfg, trained.results, run_name="killed", uri=store)
    assert _versions(store, name) == ["1"] and summary["model_version"] == "1"
    assert (summary["alias"], summary["promoted"]) == (CHAMPION, True)
    assert alias_version(name, CHAMPION, store) == "1"
    [run] = _runs_of(store, "killed")
    assert run.info.status == "FINISHED" and run.info.run_id == summary["mlflow_run_id"]
    assert run.data.tags[reg.DONE_TAG] == "true"
    history = _client(store).get_metric_history(run.info.run_id, "training.loss")
    assert len(history) == len(pd.read_csv(trained.results["finetune"].artifacts["curves"]))  # logged once
    # Finished: registering the same workflow run again returns what it did and adds nothing.
    assert reg.register(trained.cfg, trained.results, run_name="killed", uri=store) == summary
    assert _versions(store, name) == ["1"] and len(_runs_of(store, "killed")) == 1


def test_a_killed_challenger_stays_challenger_after_the_rerun(trained: Trained, store: str, tmp_path: Path) -> None:
    """The decision is made once against the champion of its time: killed after it, the re-run keeps it."""
    name = trained.cfg.registry.model_name
    first = reg.register(trained.cfg, trained.results, run_name="first", uri=store)
    worse = trained.cfg.with_overrides({"registry.margin": 10})
    _kill_at(trained, store, "decided", "worse", write_resolved_config(worse, tmp_path / "worse"))
    assert _versions(store, name) == ["1", "2"] and alias_version(name, CHALLENGER, store) is None
    summary = reg.register(worse, trained.results, run_name="worse", uri=store)
    assert (summary["model_version"], summary["alias"], summary["previous_champion"]) == ("2", CHALLENGER, "1")
    assert "does not beat" in summary["reason"]
    assert alias_version(name, CHAMPION, store) == first["model_version"] == "1"
    assert alias_version(name, CHALLENGER, store) == "2"


# ---------------------------------------------------------------- raising
def test_register_that_raises_ends_its_run_failed_and_a_rerun_resumes_it(
    trained: Trained, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(step: str) -> None:
        if step == "model":
            raise RuntimeError("injected failure after the version was created")

    name = trained.cfg.registry.model_name
    with monkeypatch.context() as mp:
        mp.setattr(reg, "_step", fail)
        with pytest.raises(RuntimeError, match="injected"):
            reg.register(trained.cfg, trained.results, run_name="raised", uri=store)
    [run] = _runs_of(store, "raised")
    assert run.info.status == "FAILED"
    assert _versions(store, name) == ["1"] and alias_version(name, CHAMPION, store) is None
    summary = reg.register(trained.cfg, trained.results, run_name="raised", uri=store)
    [run] = _runs_of(store, "raised")
    assert run.info.status == "FINISHED" and summary["mlflow_run_id"] == run.info.run_id
    assert _versions(store, name) == ["1"] and alias_version(name, CHAMPION, store) == "1"


# ---------------------------------------------------------------- a store that fails
def test_locked_store_raises_naming_it_and_no_promotion_is_decided(
    trained: Trained, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store locks after the new version exists, before the champion is read: the read fails,
    so nothing is promoted; unlocked, the same workflow run finishes with a real decision."""
    name = trained.cfg.registry.model_name
    reg.register(trained.cfg, trained.results, run_name="first", uri=store)
    database = store.removeprefix("sqlite:///")
    lock = sqlite3.connect(database, isolation_level=None)

    def lock_store(step: str) -> None:
        if step == "model":
            lock.execute("BEGIN EXCLUSIVE")  # another writer holds the database (SQLite waits 20 s)

    worse = trained.cfg.with_overrides({"registry.margin": 10})
    try:
        with monkeypatch.context() as mp:
            mp.setattr(reg, "_step", lock_store)
            with pytest.raises(StoreError) as raised:
                reg.register(worse, trained.results, run_name="locked", uri=store)
        message = str(raised.value)
        assert message.startswith(f"MLflow store {store}: ") and "locked" in message and "\n" not in message
        with pytest.raises(StoreError, match=f"^MLflow store {store}: .*locked"):
            alias_version(name, CHAMPION, store)  # a failed read is an error, never "no champion"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    client = _client(store)
    assert _versions(store, name) == ["1", "2"] and not client.get_model_version(name, "2").aliases
    assert alias_version(name, CHAMPION, store) == "1"
    summary = reg.register(worse, trained.results, run_name="locked", uri=store)
    assert (summary["model_version"], summary["alias"], summary["previous_champion"]) == ("2", CHALLENGER, "1")
    assert alias_version(name, CHAMPION, store) == "1"


def test_unreachable_tracking_server_raises_one_line_naming_it(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    for call in (
        lambda: reg.register(trained.cfg, trained.results, run_name="down", uri=uri),
        lambda: alias_version(trained.cfg.registry.model_name, CHAMPION, uri),
        lambda: load_recommender(None, trained.cfg.registry.model_name, uri),  # a store down is not a missing model
        lambda: load_recommender(f"models:/{trained.cfg.registry.model_name}/1", None, uri),
    ):
        with pytest.raises(StoreError) as raised:
            call()
        message = str(raised.value)
        assert message.startswith(f"MLflow store {uri}: ") and "\n" not in message, message


def test_store_errors_never_print_a_password() -> None:
    from recsys_tasks.registry.store import store_label

    assert store_label("postgresql://airflow:s3cret@postgres/mlflow") == "postgresql://airflow:***@postgres/mlflow"
    assert store_label("http://user:pw@mlflow:5000") == "http://user:***@mlflow:5000"
    assert store_label("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


# ---------------------------------------------------------------- recsys run
def test_recsys_run_on_a_failing_store_exits_1_in_one_line_and_removes_its_run_directory(
    tmp_path: Path,
    tiny_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from recsys_tasks.cli import main

    uri = f"http://127.0.0.1:{_closed_port()}"
    work = tmp_path / "work"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("RECSYS_WORKDIR", str(work))  # main() sets it from --workdir; restored afterwards
    sets = [arg for key, value in TINY_PIPELINE.items() for arg in ("--set", f"{key}={value}")]
    code = main(["run", "--data", str(tiny_data), "--workdir", str(work), *sets])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert "Traceback" not in captured.err
    [line] = [line for line in captured.err.splitlines() if line.startswith("recsys run: error:")]
    assert line.startswith(f"recsys run: error: MLflow store {uri}: reading ")  # checked before any stage
    assert not (work / "runs").exists() or list((work / "runs").iterdir()) == []  # removed, not left half-done

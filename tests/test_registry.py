"""The registry stage against a real MLflow (SQLite in a temporary workdir), fed by the real pipeline.

One module-scoped workdir holds four runs of `run_pipeline` on the tiny RecBole data (conftest's
``tiny_data``), text encoded by the tiny random BERT (``tiny_bert``), in order:

1. ``first``: no champion yet, so it becomes ``champion`` (version 1);
2. ``worse``: the same data with a margin it cannot beat, so it becomes ``challenger``;
3. ``reseeded``: another split seed, so the champion is evaluated again on the new split first;
4. ``no_holdout``: every fraction 0, nothing to evaluate on, so it never replaces the champion.

The CWD is an empty folder and neither ``RECSYS_WORKDIR`` nor ``MLFLOW_TRACKING_URI`` is set: the
``root`` argument alone must decide where the runs, the store and the artifacts go.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from tiny_pipeline import TINY_PIPELINE

from recsys_tasks.artifacts import StageResult
from recsys_tasks.config import PipelineConfig
from recsys_tasks.evaluation.evaluate import evaluate
from recsys_tasks.evaluation.table import mlflow_safe
from recsys_tasks.pipeline import NO_HOLDOUT, run_pipeline
from recsys_tasks.registry.store import CHALLENGER, CHAMPION, ModelNotFoundError, load_recommender
from recsys_tasks.report.model_report import load_report

pytestmark = pytest.mark.slow  # four real pipeline runs (~30 s in all); CI runs them anyway

TINY = TINY_PIPELINE
PRIMARY = "cold_mean_ndcg"
TINY_ITEM_IDS = {str(i) for i in range(1, 16)}


@dataclass(frozen=True)
class Workdir:
    root: Path
    cwd: Path
    data: Path
    cfg: PipelineConfig
    runs: dict[str, dict[str, Any]]

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def name(self) -> str:
        return self.cfg.registry.model_name

    def stage(self, run: str, stage: str) -> StageResult:
        return StageResult.load(self.root / "runs" / run / stage)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_bert: str) -> Workdir:
    base = tmp_path_factory.mktemp("registry")
    data = tiny_data  # read only: the runs write under base
    root, cwd = base / "work", base / "cwd"
    cwd.mkdir()
    cfg = PipelineConfig().with_overrides({"extract.source": str(data), **TINY, "text.model": tiny_bert})
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("RECSYS_WORKDIR", raising=False)
        mp.chdir(cwd)
        runs = {
            "first": run_pipeline(cfg, root, run_id="first"),
            "worse": run_pipeline(cfg.with_overrides({"registry.margin": 10}), root, run_id="worse"),
            "reseeded": run_pipeline(
                cfg.with_overrides({"extract.seed": 7, "registry.margin": 10}), root, run_id="reseeded"
            ),
            "no_holdout": run_pipeline(cfg.with_overrides(NO_HOLDOUT), root, run_id="no_holdout"),
        }
    return Workdir(root, cwd, data, cfg, runs)


@pytest.fixture
def client(work: Workdir) -> MlflowClient:
    mlflow.set_tracking_uri(work.uri)
    return MlflowClient(tracking_uri=work.uri, registry_uri=work.uri)


def _champion(client: MlflowClient, work: Workdir) -> str:
    return str(client.get_model_version_by_alias(work.name, CHAMPION).version)


# ---------------------------------------------------------------- where things land
def test_store_runs_and_artifacts_live_under_the_root_not_the_cwd(work: Workdir, client: MlflowClient) -> None:
    assert (work.root / "mlflow.db").is_file()
    assert all(s["tracking_uri"] == work.uri for s in work.runs.values())
    assert sorted(p.name for p in (work.root / "runs").iterdir()) == sorted(work.runs)
    artifact_dir = Path(unquote(urlparse(client.get_run(work.runs["first"]["mlflow_run_id"]).info.artifact_uri).path))
    assert artifact_dir.is_relative_to(work.root / "mlartifacts")
    assert (artifact_dir / "evaluation" / "table.md").is_file()
    assert list(work.cwd.iterdir()) == []  # no mlruns/, mlartifacts/ or .recsys/ in the CWD


# ---------------------------------------------------------------- the first run
def test_first_run_registers_version_1_as_champion(work: Workdir, client: MlflowClient) -> None:
    first = work.runs["first"]
    assert (first["model_version"], first["alias"], first["promoted"]) == ("1", CHAMPION, True)
    assert first["previous_champion"] is None and "no champion" in first["reason"]
    version = client.get_model_version(work.name, "1")
    assert version.run_id == first["mlflow_run_id"]
    assert version.tags["split_fingerprint"] == work.stage("first", "extract").info["split_fingerprint"]
    assert _champion(client, work) == "1"  # and still, after every later run


def test_run_logs_params_metrics_and_tags(work: Workdir, client: MlflowClient) -> None:
    first = work.runs["first"]
    run = client.get_run(first["mlflow_run_id"])
    params = run.data.params
    assert params["extract.source"] == str(work.data)
    assert (params["kg.embedding_dim"], params["finetune.epochs"], params["finetune.dim"]) == ("4", "2", "8")
    assert params["registry.primary_metric"] == PRIMARY
    assert first["metrics"] and PRIMARY in first["metrics"]
    for key, value in first["metrics"].items():  # every evaluation metric, under its MLflow-safe name
        assert run.data.metrics[mlflow_safe(key)] == pytest.approx(value), key
    assert "cold-user_at_0/ndcg/model" in run.data.metrics
    assert any(k.startswith("finetune.") for k in run.data.metrics)  # the other stages' metrics too
    tags = run.data.tags
    extract = work.stage("first", "extract")
    assert tags["split_fingerprint"] == extract.info["split_fingerprint"]
    assert tags["data_fingerprint"] == extract.info["fingerprint"]
    assert (tags["evaluated"], tags["promotion.promoted"], tags["model_version"]) == ("True", "True", "1")


def test_run_logs_config_report_curves_and_model(work: Workdir, client: MlflowClient) -> None:
    run_id = work.runs["first"]["mlflow_run_id"]
    listed = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "evaluation", "training", "data"} <= listed
    assert "evaluation/table.md" in {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert {"training/curves.csv", "training/curves.png"} <= {a.path for a in client.list_artifacts(run_id, "training")}
    assert "evaluation/slices.png" in {a.path for a in client.list_artifacts(run_id, "evaluation")}
    curves = pd.read_csv(work.stage("first", "finetune").artifacts["curves"])
    history = client.get_metric_history(run_id, "training.loss")
    assert [(m.step, round(m.value, 6)) for m in history] == list(zip(curves["epoch"], curves["loss"].round(6)))
    # MLflow 3 keeps the pyfunc model as a LoggedModel output of the run, not under the run's artifacts.
    model_uri = client.get_model_version(work.name, "1").source
    logged = client.get_logged_model(model_uri.rsplit("/", 1)[-1])
    assert (logged.name, logged.source_run_id) == ("model", run_id)
    assert logged.model_id in {o.model_id for o in client.get_run(run_id).outputs.model_outputs}
    assert Path(unquote(urlparse(logged.artifact_location).path)).is_relative_to(work.root / "mlartifacts")
    model_files = {a.path for a in mlflow.artifacts.list_artifacts(artifact_uri=model_uri)}
    assert {"MLmodel", "artifacts", "code", "requirements.txt"} <= model_files
    config = yaml.safe_load(
        Path(
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config.yaml", tracking_uri=work.uri)
        ).read_text()
    )
    assert config == work.cfg.to_dict()


def test_champion_loads_as_pyfunc_and_answers_requests(work: Workdir, client: MlflowClient) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{work.name}@{CHAMPION}")
    responses = model.predict([{"request_id": "a", "k": 3}])
    assert [r["request_id"] for r in responses] == ["a"]
    items = [i["item_id"] for i in responses[0]["items"]]
    assert len(items) == len(set(items)) == 3 and set(items) <= TINY_ITEM_IDS
    scores = [i["score"] for i in responses[0]["items"]]
    assert scores == sorted(scores, reverse=True)
    assert all(isinstance(i["reason"], str) and i["reason"] for i in responses[0]["items"])
    requests = [
        {"request_id": "kg", "history": [{"item_id": "3", "rating": 5}], "k": 5},
        {"request_id": "taste", "text": "I like Sci-Fi.", "candidates": ["3", "4"]},
    ]
    direct = load_recommender(f"models:/{work.name}/1", uri=work.uri).recommend(requests)
    predicted = model.predict(requests)
    assert [r["items"] for r in predicted] == [r["items"] for r in direct]  # reasons included
    assert {i["item_id"]: i["reason"] for i in predicted[1]["items"]}[
        "3"
    ] == "matches 'Sci-Fi'"  # item 3: Sci-Fi|Comedy
    # The registered version, as the CLI and the API name it (issue 22: one identity everywhere)
    assert responses[0]["model_version"] == "1"


def test_pyfunc_copied_away_from_its_registry_names_the_run_that_made_it(
    work: Workdir, client: MlflowClient, tmp_path: Path
) -> None:
    copy = mlflow.artifacts.download_artifacts(
        artifact_uri=client.get_model_version(work.name, "1").source, dst_path=str(tmp_path / "model")
    )
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")  # a store that never saw the run
    try:
        [response] = mlflow.pyfunc.load_model(copy).predict([{"request_id": "a", "k": 2}])
    finally:
        mlflow.set_tracking_uri(work.uri)
    assert response["model_version"] == f"run:{work.runs['first']['mlflow_run_id']}"


def test_load_recommender_defaults_to_the_champion(work: Workdir) -> None:
    recommender = load_recommender(model_name=work.name, uri=work.uri)
    assert recommender.meta["model_version"] == "1"
    [response] = recommender.recommend([{"request_id": "b", "k": 2}])
    assert response["model_version"] == "1" and len(response["items"]) == 2


# ---------------------------------------------------------------- the gate on later runs
def test_model_that_cannot_beat_the_champion_becomes_challenger(work: Workdir, client: MlflowClient) -> None:
    worse = work.runs["worse"]
    assert (worse["model_version"], worse["alias"], worse["promoted"]) == ("2", CHALLENGER, False)
    assert str(worse["previous_champion"]) == "1"
    assert "does not beat" in worse["reason"]
    assert client.get_model_version(work.name, "2").tags["decision"] == worse["reason"]
    assert client.get_run(worse["mlflow_run_id"]).data.tags["promotion.promoted"] == "False"
    assert _champion(client, work) == "1"


def test_new_split_reevaluates_the_champion_before_comparing(work: Workdir, tmp_path: Path) -> None:
    reseeded = work.runs["reseeded"]
    first_split = work.stage("first", "extract").info["split_fingerprint"]
    new_split = work.stage("reseeded", "extract").info["split_fingerprint"]
    assert new_split != first_split
    assert (reseeded["alias"], reseeded["promoted"]) == (CHALLENGER, False)
    match = re.fullmatch(
        rf"{PRIMARY} ([\d.]+) does not beat the champion's ([\d.]+) by more than 10", reseeded["reason"]
    )
    assert match, reseeded["reason"]
    # The champion's number in the decision is version 1 scored on the *new* split, not its logged one.
    bundle = work.stage("first", "finetune").artifacts["bundle"]
    again = evaluate(
        work.cfg.evaluate,
        work.root / "runs/reseeded/extract",
        work.root / "runs/reseeded/text_embed",
        bundle,
        tmp_path / "champion_on_new_split",
        work.cfg.extract.positive_threshold,
    )
    assert float(match.group(2)) == pytest.approx(again.metrics[PRIMARY], abs=5e-5)
    assert abs(work.runs["first"]["metrics"][PRIMARY] - again.metrics[PRIMARY]) > 1e-3


def test_no_holdout_run_never_replaces_the_champion(work: Workdir, client: MlflowClient) -> None:
    run = work.runs["no_holdout"]
    assert run["metrics"] == {} and run["table"] is None
    assert (run["alias"], run["promoted"]) == (CHALLENGER, False)
    assert "not evaluated" in run["reason"]
    assert client.get_run(run["mlflow_run_id"]).data.tags["evaluated"] == "False"
    assert _champion(client, work) == "1"
    assert str(client.get_model_version_by_alias(work.name, CHALLENGER).version) == run["model_version"] == "4"


# ---------------------------------------------------------------- what the model report reads
def test_model_report_reads_the_champion_and_the_challenger(work: Workdir) -> None:
    report = load_report(work.name, work.uri)
    champion, challenger = report.get(CHAMPION), report.get(CHALLENGER)
    first = work.runs["first"]
    assert (champion.version, champion.run_id, champion.run_name) == ("1", first["mlflow_run_id"], "first")
    assert champion.primary == pytest.approx(first["metrics"][PRIMARY])
    assert (champion.source, champion.k, champion.decision) == (str(work.data), 20, first["reason"])
    table = work.stage("first", "evaluate").info["table"]
    assert [s.name for s in champion.slices] == re.findall(r"^\| (\S+) +\|", table, re.M)[1:]
    for row in champion.slices:
        assert row.model == pytest.approx(first["metrics"][f"{row.name}/ndcg/model"])
    # The challenger is the latest loser: the no-holdout run, never evaluated, so no slices.
    assert (challenger.version, challenger.slices) == ("4", ())
    assert "not evaluated" in challenger.decision
    assert load_report("no-such-model", work.uri).registered is False


# ---------------------------------------------------------------- loading
@pytest.mark.parametrize(
    "model_uri",
    ["models:/no-such-model@champion", "models:/recsys-cold-start/99", "runs:/0123456789abcdef0123456789abcdef/model"],
)
def test_unknown_model_uri_raises_model_not_found(work: Workdir, model_uri: str) -> None:
    with pytest.raises(ModelNotFoundError, match=re.escape(repr(model_uri))):
        load_recommender(model_uri, uri=work.uri)


def test_a_champion_that_ranks_another_catalogue_is_not_compared_and_says_why(
    work: Workdir, client: MlflowClient, tmp_path: Path
) -> None:
    """A candidate trained on a catalogue without one of the champion's items: the champion cannot be
    measured on the candidate's data, so the gate says so instead of crashing on the score shapes."""
    from recsys_tasks.registry import register as reg
    from recsys_tasks.stages import BY_NAME, RunContext, run_stage

    data = tmp_path / "data"
    data.mkdir()
    for path in work.data.iterdir():  # the tiny data less item 15 and its interactions
        rows = path.read_text().splitlines()
        dropped = {".item": 0, ".inter": 1, ".link": 0}.get(path.suffix)
        kept = [r for r in rows[1:] if dropped is None or r.split("\t")[dropped] != "15"]
        (data / path.name).write_text("\n".join([rows[0], *kept]) + "\n")
    cfg = work.cfg.with_overrides({"extract.source": str(data)})
    ctx, results = RunContext(cfg, "other-catalogue", tmp_path / "run", work.uri), {}
    for name in ("extract", "kg_embed", "text_embed", "finetune", "evaluate"):
        results[name] = run_stage(BY_NAME[name], ctx, results)
    champion = client.get_model_version_by_alias(work.name, CHAMPION)
    with pytest.raises(reg.NotComparableError, match=r"another catalogue \(15 items; this run's has 14\)"):
        reg._champion_metrics(client, champion, results["extract"].info["split_fingerprint"], cfg, results)


def test_champion_that_cannot_be_reevaluated_is_kept(work: Workdir, client: MlflowClient) -> None:
    """A champion whose model no longer loads (here: its weights file is gone, as with a bundle saved by
    an incompatible version) cannot be compared on a new split: the candidate is only a challenger.
    Runs last in this module: it damages version 1's artifacts."""
    champion = _champion(client, work)
    bundle = Path(unquote(urlparse(client.get_model_version_download_uri(work.name, champion)).path))
    weights = next(bundle.rglob("model.pt"))
    weights.unlink()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.chdir(work.cwd)
        summary = run_pipeline(work.cfg.with_overrides({"extract.seed": 8}), work.root, run_id="damaged")
    assert summary["promoted"] is False and summary["alias"] == CHALLENGER
    assert f"champion v{champion} could not be evaluated" in summary["reason"]
    assert _champion(client, work) == champion

"""Monitoring: data drift between snapshots (known answers on hand-made interactions), the first run, the
retraining decision, bad input, extract's report and metrics, the drift-check task on a real source, the
champion's live quality (its sample and NDCG by hand), the model report's rows, and (slow) the drift-check
DAG and two real pipeline runs whose second logs the champion's live NDCG and the drift to MLflow."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import BASE_TIME, N_USERS, PER_USER, read_rows, write_variant

from recsys_tasks.config import ConfigError, ExtractConfig, MonitorConfig, PipelineConfig
from recsys_tasks.data.drift import DriftInputError, check_source, decide, measure, rating_tv, read_interactions
from recsys_tasks.data.extract import extract
from recsys_tasks.evaluation.live import live_sample, ndcg
from recsys_tasks.report.model_report import ModelReport, VersionReport, drift_rows, render_html

DAGS = Path(__file__).resolve().parents[1] / "dags"


def _frame(rows: list[tuple[str, str, float, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


PREVIOUS = _frame([("a", "i1", 5, 1), ("b", "i1", 4, 2), ("c", "i2", 3, 3)])


# ---------------------------------------------------------------- the figures
def test_one_new_user_of_four_interactions_on_a_new_item() -> None:
    current = _frame([*PREVIOUS.itertuples(index=False), ("d", "i3", 1, 4)])
    found = measure(current, PREVIOUS)
    assert found["drift_new_user_share"] == 0.25 and found["drift_new_item_share"] == 0.25
    assert found["drift_volume_ratio"] == pytest.approx(4 / 3)
    assert found["drift_rating_tv"] == pytest.approx(1.0)  # the one added rating (1) was never given before
    assert found["drift_added_interactions"] == 1.0


def test_the_rating_distance_compares_only_the_added_interactions() -> None:
    # b re-rates i1 (a new timestamp: added) with a 4 and a new row of a with a 5: added ratings {4, 5}
    current = _frame([*PREVIOUS.itertuples(index=False), ("a", "i2", 4, 5), ("b", "i2", 5, 6)])
    found = measure(current, PREVIOUS)
    assert (found["drift_new_user_share"], found["drift_new_item_share"]) == (0.0, 0.0)
    # added: 4 and 5 each 1/2; previous: 3, 4, 5 each 1/3 -> ½(1/3 + 1/6 + 1/6) = 1/3
    assert found["drift_rating_tv"] == pytest.approx(1 / 3)


def test_the_same_snapshot_has_no_drift() -> None:
    assert measure(PREVIOUS.copy(), PREVIOUS) == {
        "drift_new_user_share": 0.0,
        "drift_new_item_share": 0.0,
        "drift_volume_ratio": 1.0,
        "drift_rating_tv": 0.0,
        "drift_added_interactions": 0.0,
    }


def test_rating_distance_by_value_and_by_bins_on_a_continuous_scale() -> None:
    assert rating_tv([5, 5, 4, 4], [5, 4, 4, 4]) == pytest.approx(0.25)
    continuous = [0.5 + i / 100 for i in range(100)]  # 100 distinct values: 10 equal-width bins
    assert rating_tv(continuous, continuous[::-1]) == pytest.approx(0.0)
    assert rating_tv(continuous[:50], continuous[50:]) == pytest.approx(1.0)


# ---------------------------------------------------------------- the decision
def test_the_largest_drift_decides_against_the_threshold() -> None:
    metrics = {"drift_new_user_share": 0.25, "drift_new_item_share": 0.0, "drift_rating_tv": 0.1}
    retrain, reason = decide({**metrics, "drift_volume_ratio": 9.0}, 0.2)  # the volume ratio does not decide
    assert retrain and "drift_new_user_share 0.2500" in reason and "0.2" in reason
    assert decide(metrics, 0.25) == (False, "largest drift drift_new_user_share 0.2500 is within the threshold 0.25")
    assert decide({}, 0.0) == (False, "first run: no previous snapshot to compare with")
    few = {**metrics, "drift_rating_tv": 0.9, "drift_added_interactions": 30.0}
    assert decide(few, 0.5, min_added=31)[0] is False  # 30 added ratings: their distance is not trusted
    assert decide(few, 0.5, min_added=30) == (True, "drift_rating_tv 0.9000 passes the threshold 0.5")


@pytest.mark.parametrize("value", [-0.1, 1.0, 2])
def test_a_threshold_outside_zero_to_one_is_refused(value: float) -> None:
    with pytest.raises(ConfigError, match="monitor.drift_threshold"):
        PipelineConfig().with_overrides({"monitor.drift_threshold": value})


# ---------------------------------------------------------------- bad input
def test_a_missing_column_is_named() -> None:
    with pytest.raises(DriftInputError, match=r"current interactions: missing column\(s\) \['rating'\]"):
        measure(PREVIOUS.drop(columns="rating"), PREVIOUS)
    with pytest.raises(DriftInputError, match=r"previous interactions: missing column\(s\) \['timestamp'\]"):
        measure(PREVIOUS, PREVIOUS.drop(columns="timestamp"))
    with pytest.raises(DriftInputError, match="no rows to compare with"):
        measure(PREVIOUS, PREVIOUS.iloc[:0])


def test_a_previous_snapshot_without_interactions_or_a_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(DriftInputError, match="no interactions.parquet"):
        read_interactions(tmp_path)
    PREVIOUS.drop(columns="item_id").to_parquet(tmp_path / "interactions.parquet")
    with pytest.raises(DriftInputError, match=r"interactions.parquet: missing column\(s\) \['item_id'\]"):
        read_interactions(tmp_path)


# ---------------------------------------------------------------- extract and the drift check on a real source
def _two_new_users(source: Path) -> None:
    """Users 13 and 14, ten 5-star interactions each, after everything else: 20 of 80 interactions."""
    users = source / "tiny.user"
    write_variant(users, append=[["13", "30", "F", "artist", "00013"], ["14", "31", "M", "artist", "00014"]])
    later = BASE_TIME + 10**6
    rows = [[str(u), str(i), "5", str(later + 10 * i)] for u in (13, 14) for i in range(1, 11)]
    write_variant(source / "tiny.inter", append=rows)


def test_extract_reports_a_first_run_then_the_drift_of_the_next(tiny_data: Path, tmp_path: Path) -> None:
    source = shutil.copytree(tiny_data, tmp_path / "source")  # the same path: the same source
    runs = tmp_path / "work" / "runs"
    first = extract(ExtractConfig(source=str(source)), runs / "first" / "extract")
    report = json.loads(Path(first.artifacts["report"]).read_text())
    assert report["drift"] == {"status": "first run", "previous_snapshot": None}
    assert not any(k.startswith("drift_") for k in first.metrics)
    assert first.metrics["max_timestamp"] == report["max_timestamp"] == BASE_TIME + 1000 * N_USERS + 10 * 4

    _two_new_users(source)
    second = extract(ExtractConfig(source=str(source)), runs / "second" / "extract")
    expected = {
        "drift_new_user_share": 0.25,  # 20 of 80
        "drift_new_item_share": 0.0,
        "drift_volume_ratio": 80 / (N_USERS * PER_USER),
        "drift_rating_tv": 0.8,  # the tiny ratings are uniform over 1-5; every added one is a 5
        "drift_added_interactions": 20.0,
    }
    assert {k: second.metrics[k] for k in expected} == pytest.approx(expected)
    report = json.loads(Path(second.artifacts["report"]).read_text())
    assert report["drift"]["status"] == "measured"
    assert report["drift"]["previous_snapshot"] == str((runs / "first" / "extract").resolve())

    other = shutil.copytree(tiny_data, tmp_path / "other")  # another source: never compared with these
    assert "drift_new_user_share" not in extract(ExtractConfig(source=str(other)), runs / "third" / "extract").metrics
    sampled = extract(ExtractConfig(source=str(source), sample_users=5), runs / "fourth" / "extract")
    assert "drift_new_user_share" not in sampled.metrics  # another sample of users: its own first run


def test_the_drift_check_reads_the_source_and_decides(tiny_data: Path, tmp_path: Path) -> None:
    source = shutil.copytree(tiny_data, tmp_path / "source")
    runs = tmp_path / "runs"
    cfg = ExtractConfig(source=str(source))
    first = check_source(cfg, MonitorConfig(), runs)
    assert (first["retrain"], first["previous_snapshot"]) == (False, None)
    assert first["reason"].startswith("first run")
    extract(cfg, runs / "first" / "extract")
    assert check_source(cfg, MonitorConfig(), runs)["retrain"] is False  # nothing changed: 0 everywhere
    _two_new_users(source)
    found = check_source(cfg, MonitorConfig(drift_threshold=0.5, min_added=20), runs)
    assert found["retrain"] and found["drift_rating_tv"] == pytest.approx(0.8)
    assert found["drift_new_user_share"] == 0.25 and found["n_interactions"] == 80
    assert found["reason"] == "drift_rating_tv 0.8000 passes the threshold 0.5"
    assert check_source(cfg, MonitorConfig(drift_threshold=0.9, min_added=20), runs)["retrain"] is False
    # the default min_added (100): 20 added ratings are too few to count; the new-user share 0.25 decides
    assert check_source(cfg, MonitorConfig(drift_threshold=0.5), runs)["retrain"] is False
    assert list(runs.glob("*")) == [runs / "first"]  # the check writes nothing


# ---------------------------------------------------------------- the champion's live quality
def _snapshot(tmp_path: Path) -> Path:
    folder = tmp_path / "snapshot"
    folder.mkdir(parents=True)
    _frame(
        [
            ("known", "i1", 5, 10),
            ("known", "i2", 5, 30),  # newer, positive
            ("known", "i3", 2, 31),  # newer, not a positive
            ("new", "i1", 4, 5),  # before the cutoff: the new user's history
            ("new", "i3", 4, 40),  # newer, positive
            ("new", "gone", 5, 41),  # an item the champion does not rank
            ("quiet", "i2", 1, 50),  # newer, no positive: not sampled
        ]
    ).to_parquet(folder / "interactions.parquet")
    pd.DataFrame(
        {
            "user_id": ["known", "new", "quiet"],
            "age": [30, 41, 22],
            "gender": ["F", "M", "F"],
            "occupation": ["a", "b", ""],
        }
    ).to_parquet(folder / "users.parquet")
    return folder


def test_the_live_sample_asks_as_serving_would_at_the_cutoff(tmp_path: Path) -> None:
    sample = live_sample(_snapshot(tmp_path), 20, MonitorConfig(live_k=5), 4.0, {"i1", "i2", "i3"}, {"known"})
    assert not isinstance(sample, str)
    assert sample.newer_interactions == 5
    assert sample.requests == [
        {"request_id": "live-0", "user_id": "known", "k": 5},  # the champion's own profile and history
        {
            "request_id": "live-1",
            "user_id": "new",
            "k": 5,
            "history": [{"item_id": "i1", "rating": 4.0, "timestamp": 5}],
            "profile": {"gender": "M", "occupation": "b", "age": 41},
        },
    ]
    assert sample.positives == {"live-0": frozenset({"i2"}), "live-1": frozenset({"i3"})}
    one = live_sample(_snapshot(tmp_path / "x"), 20, MonitorConfig(live_users=1), 4.0, {"i1", "i2", "i3"}, set())
    assert len(one.requests) == 1  # bounded, seeded


def test_the_live_sample_says_why_there_is_none(tmp_path: Path) -> None:
    snapshot = _snapshot(tmp_path)
    assert live_sample(snapshot, 50, MonitorConfig(), 4.0, {"i1"}, set()) == (
        "no interactions newer than the champion's snapshot (its newest: 50)"
    )
    assert live_sample(snapshot, 20, MonitorConfig(), 4.0, {"i1"}, set()) == (
        "5 newer interactions, none a positive on an item the champion ranks"
    )


def test_live_ndcg_by_hand() -> None:
    responses = [
        {"request_id": "r1", "items": [{"item_id": "a"}, {"item_id": "x"}, {"item_id": "b"}]},
        {"request_id": "r2", "items": [{"item_id": "x"}, {"item_id": "y"}]},
    ]
    positives = {"r1": {"a", "b"}, "r2": {"z"}}
    r1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg(responses, positives, 20) == pytest.approx((r1 + 0.0) / 2)
    assert ndcg(responses, positives, 1) == pytest.approx(0.5)  # only the first place counts


# ---------------------------------------------------------------- the model report
def test_the_report_shows_each_versions_drift_and_live_quality() -> None:
    metrics = {"extract.drift_new_user_share": 0.25, "extract.drift_rating_tv": 0.125, "extract.n_users": 5.0}
    rows = drift_rows(metrics)
    assert rows == [
        ("share of interactions by new users", 0.25),
        ("rating distribution distance (total variation)", 0.125),
    ]
    common = dict(run_id="r", run_name="n", experiment_id="1", created="", decision="", source="s", k=20)
    versions = (
        VersionReport(
            "champion",
            "2",
            **common,
            primary=None,
            primary_baseline=None,
            slices=(),
            drift=tuple(rows),
            live_ndcg=0.3125,
            live_note="champion v1: NDCG@20 0.3125 over 7 users",
        ),
        VersionReport(
            "challenger",
            "3",
            **common,
            primary=None,
            primary_baseline=None,
            slices=(),
            live_note="skipped: no champion yet",
        ),
    )
    html = render_html(ModelReport("m", True, versions), "u")
    champion, challenger = html.split('<section class="card challenger">')
    assert '<td>share of interactions by new users</td><td class="n">0.2500</td>' in champion
    assert "<b>0.3125</b> (champion v1: NDCG@20 0.3125 over 7 users)" in champion
    assert "No data drift measured" in challenger and "skipped: no champion yet" in challenger


# ---------------------------------------------------------------- slow: the DAG, the registry
@pytest.mark.slow
def test_the_drift_check_dag_parses_and_triggers_the_cold_start_dag(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.delenv("RECSYS_DRIFT_SCHEDULE", raising=False)
    bag = DagBag(dag_folder=str(DAGS / "recsys_drift_check.py"))
    assert bag.import_errors == {}
    dag = bag.dags["recsys_drift_check"]
    assert dag.schedule is None and dag.catchup is False  # unpausing never starts an unrequested run
    assert {t.task_id: t.upstream_task_ids for t in dag.tasks} == {
        "measure": set(),
        "retrain_needed": {"measure"},
        "trigger_retrain": {"retrain_needed"},
    }
    trigger = dag.get_task("trigger_retrain")
    assert trigger.trigger_dag_id == "recsys_cold_start"
    assert set(trigger.conf) == {"source", "sample_users"}
    monkeypatch.setenv("RECSYS_DRIFT_SCHEDULE", "@daily")
    scheduled = DagBag(dag_folder=str(DAGS / "recsys_drift_check.py")).dags["recsys_drift_check"]
    assert scheduled.schedule == "@daily"


@pytest.mark.slow
def test_register_logs_the_drift_and_the_champions_live_quality(
    tiny_data: Path, tiny_bert: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two tiny pipeline runs on one source; between them every user rates two more items 5 stars, later."""
    from mlflow import MlflowClient
    from tiny_pipeline import TINY_PIPELINE

    from recsys_tasks.pipeline import run_pipeline
    from recsys_tasks.report.model_report import load_report

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    source, root = shutil.copytree(tiny_data, tmp_path / "source"), tmp_path / "work"
    cfg = PipelineConfig().with_overrides({"extract.source": str(source), **TINY_PIPELINE, "text.model": tiny_bert})
    first = run_pipeline(cfg, root, run_id="first")
    _, rows = read_rows(source / "tiny.inter")
    rated = {(r[0], r[1]) for r in rows}
    later = BASE_TIME + 10**6
    added = []
    for u in range(1, N_USERS + 1):
        unrated = [i for i in range(1, 16) if (str(u), str(i)) not in rated][:2]
        added += [[str(u), str(i), "5", str(later + i)] for i in unrated]
    write_variant(source / "tiny.inter", append=added)
    second = run_pipeline(cfg.with_overrides({"registry.margin": 10}), root, run_id="second")

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run1, run2 = client.get_run(first["mlflow_run_id"]).data, client.get_run(second["mlflow_run_id"]).data
    assert run1.tags["monitor.champion_live"] == "skipped: no champion yet"
    assert "champion_live_ndcg" not in run1.metrics and "extract.drift_new_user_share" not in run1.metrics
    assert run2.tags["monitor.champion_live"].startswith("champion v1: NDCG@20 ")
    assert 0.0 <= run2.metrics["champion_live_ndcg"] <= 1.0
    assert run2.metrics["champion_live_users"] == N_USERS  # every user has a newer positive
    assert run2.metrics["extract.drift_new_user_share"] == 0.0
    assert run2.metrics["extract.drift_volume_ratio"] == pytest.approx((N_USERS * PER_USER + 2 * N_USERS) / 60)
    assert run2.metrics["extract.drift_rating_tv"] == pytest.approx(0.8)
    report = load_report(cfg.registry.model_name, uri)
    challenger = report.get("challenger")
    assert challenger.run_name == "second" and challenger.live_ndcg == run2.metrics["champion_live_ndcg"]
    assert ("rating distribution distance (total variation)", pytest.approx(0.8)) in challenger.drift

"""The model report: logged metrics back into slices, the chart, the page. Metrics come from the real
`evaluation.flat_metrics` on a small frame whose numbers are written out here, so what the report
shows is checked against what the evaluate stage logs. Reading a real registry with a champion and a
challenger is in tests/test_registry.py (it has the runs); an empty real store is read here."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from recsys_tasks.evaluation.table import flat_metrics, mlflow_safe
from recsys_tasks.report.model_report import (
    BeyondRow,
    ModelReport,
    SliceScores,
    VersionReport,
    beyond_rows,
    chart_svg,
    load_report,
    mlflow_ui_url,
    render_html,
    slice_scores,
)

SVG = "{http://www.w3.org/2000/svg}"
# slice, ranker, kind, users, ndcg@20: the shape `evaluate_slices` returns (recall, auc, seconds filled below).
ROWS = [
    ("cold-user@0", "popularity", "baseline", 40, 0.10),
    ("cold-user@0", "model", "model", 40, 0.15),
    ("cold-user@5", "popularity", "baseline", 40, 0.12),
    ("cold-user@5", "item_knn", "baseline", 40, 0.20),
    ("cold-user@5", "model", "model", 40, 0.18),
    ("cold-user@0+text", "genre_popularity", "baseline", 40, 0.11),
    ("cold-user@0+text", "model", "model", 40, 0.16),
    ("cold-item", "text_profile", "baseline", 30, 0.30),
    ("cold-item", "model", "model", 30, 0.45),
    ("warm", "als", "baseline", 50, 0.40),
    ("warm", "model", "model", 50, 0.35),
]
EXPECTED = {  # slice -> (users, model, baselines)
    "cold-user@0": (40, 0.15, {"popularity": 0.10}),
    "cold-user@5": (40, 0.18, {"item_knn": 0.20, "popularity": 0.12}),
    "cold-user@0+text": (40, 0.16, {"genre_popularity": 0.11}),
    "cold-item": (30, 0.45, {"text_profile": 0.30}),
    "warm": (50, 0.35, {"als": 0.40}),
}


def _beyond(ndcg: float) -> dict[str, float]:
    """Beyond-accuracy columns written out from a row's NDCG, so each (slice, ranker) has its own values."""
    return {"coverage@20": ndcg + 0.5, "novelty@20": 10 * ndcg, "diversity@20": ndcg + 0.3, "pop_share@20": 1 - ndcg}


@pytest.fixture
def logged() -> dict[str, float]:
    """The flat metrics of ROWS under the MLflow-safe names the register stage logs."""
    frame = pd.DataFrame(
        [
            {
                "slice": s,
                "ranker": r,
                "kind": k,
                "users": u,
                "ndcg@20": v,
                "recall@20": v / 2,
                "auc": math.nan,
                **_beyond(v),
                "seconds": 0.1,
            }
            for s, r, k, u, v in ROWS
        ]
    )
    return {mlflow_safe(k): v for k, v in flat_metrics(frame).items()}


# ---------------------------------------------------------------- metrics -> slices
def test_slice_scores_read_back_every_slice_the_evaluate_stage_logs(logged: dict[str, float]) -> None:
    rows = slice_scores({**logged, "kg_embed.mrr": 0.5, "finetune.val/loss": 1.0})
    assert [r.name for r in rows] == ["cold-user@0", "cold-user@5", "cold-user@0+text", "cold-item", "warm"]
    for row in rows:
        users, model, baselines = EXPECTED[row.name]
        assert (row.users, row.model) == (users, pytest.approx(model))
        assert dict(row.baselines) == pytest.approx(baselines)  # best_baseline is derived, not a ranker
    knn = rows[1]
    assert knn.best_baseline == ("item_knn", pytest.approx(0.20))
    assert knn.ratio == pytest.approx(0.18 / 0.20)


def test_raw_and_mlflow_safe_keys_give_the_same_rows(logged: dict[str, float]) -> None:
    raw = {re.sub("_plus_", "+", re.sub("_at_", "@", k)): v for k, v in logged.items()}
    assert "cold-user@0+text/ndcg/model" in raw
    assert slice_scores(raw) == slice_scores(logged)


def test_recall_is_another_metric_of_the_same_slices(logged: dict[str, float]) -> None:
    [first, *_] = slice_scores(logged, metric="recall")
    assert first.name == "cold-user@0" and first.model == pytest.approx(0.075)


def test_a_missing_or_nan_score_is_left_out_not_drawn_as_zero() -> None:
    rows = slice_scores(
        {
            "warm/users": 3,
            "warm/ndcg/als": float("nan"),
            "warm/ndcg/model": 0.2,
            "cold-item/users": 2,
            "cold-item/ndcg/random": 0.1,
        }
    )
    assert [(r.name, r.model, dict(r.baselines)) for r in rows] == [
        ("cold-item", None, {"random": 0.1}),
        ("warm", 0.2, {}),
    ]
    assert rows[0].ratio is None and rows[1].best_baseline is None


def test_beyond_rows_read_back_every_ranker_of_every_slice(logged: dict[str, float]) -> None:
    rows = beyond_rows({**logged, "cold-item/novelty/random": float("nan")})
    assert [(r.slice, r.ranker) for r in rows] == [
        ("cold-user@0", "popularity"),
        ("cold-user@0", "model"),
        ("cold-user@5", "item_knn"),
        ("cold-user@5", "popularity"),
        ("cold-user@5", "model"),
        ("cold-user@0+text", "genre_popularity"),
        ("cold-user@0+text", "model"),
        ("cold-item", "text_profile"),
        ("cold-item", "model"),
        ("warm", "als"),
        ("warm", "model"),
    ]  # the protocol's slice order, baselines by name, the model last; a NaN alone makes no row
    by_key = {(r.slice, r.ranker): r for r in rows}
    for s, r, _, _, v in ROWS:
        expected = _beyond(v)
        assert by_key[(s, r)] == BeyondRow(
            s,
            r,
            pytest.approx(expected["coverage@20"]),
            pytest.approx(expected["novelty@20"]),
            pytest.approx(expected["diversity@20"]),
            pytest.approx(expected["pop_share@20"]),
        )
    assert beyond_rows({"warm/ndcg/model": 0.3, "warm/users": 5}) == []  # a run from before these metrics


# ---------------------------------------------------------------- the chart
def test_chart_draws_one_bar_per_score_with_length_proportional_to_it(logged: dict[str, float]) -> None:
    rows = slice_scores(logged)
    root = ET.fromstring(chart_svg(rows, k=20, title="champion v3"))  # well-formed, stand-alone SVG
    bars = {
        rect.find(f"{SVG}title").text: float(rect.get("width"))
        for rect in root.iter(f"{SVG}rect")
        if rect.find(f"{SVG}title") is not None
    }
    expected = {
        f"{r.name} / {name}: {value:.4f}": value
        for r in rows
        for name, value in [*r.baselines.items(), ("model", r.model)]
    }
    assert set(bars) == set(expected)
    per_unit = {round(bars[key] / value, 6) for key, value in expected.items()}
    assert len(per_unit) == 1  # the same scale for every bar
    text = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "champion v3: NDCG@20 per slice" in text
    for name in ("popularity", "item_knn", "genre_popularity", "text_profile", "als", "model"):
        assert name in text  # the legend and the value labels


def test_chart_of_nothing_says_so() -> None:
    root = ET.fromstring(chart_svg([], k=10))
    assert "no evaluation metrics" in " ".join(t.text or "" for t in root.iter(f"{SVG}text"))


# ---------------------------------------------------------------- the page
def _version(
    alias: str, version: str, rows: list[SliceScores], decision: str = "", beyond: tuple[BeyondRow, ...] = ()
) -> VersionReport:
    return VersionReport(
        alias=alias,
        version=version,
        run_id="abc123",
        run_name=f"run-{version}",
        experiment_id="7",
        created="2026-01-01 00:00 UTC",
        decision=decision,
        source="bundled",
        k=20,
        primary=0.2,
        primary_baseline=0.1,
        slices=tuple(rows),
        beyond=beyond,
    )


def test_page_without_a_registered_model_says_what_to_do() -> None:
    html = render_html(ModelReport("recsys-cold-start", registered=False), "http://mlflow:5000")
    assert "No model registered yet" in html and "recsys_cold_start" in html and "make run" in html
    assert "<section" not in html


def test_page_shows_champion_and_challenger_side_by_side(logged: dict[str, float]) -> None:
    rows = slice_scores(logged)
    worse = [SliceScores(r.name, r.users, None if r.model is None else r.model - 0.01, r.baselines) for r in rows]
    report = ModelReport(
        "m",
        True,
        (
            _version("champion", "3", rows, "no champion yet"),
            _version("challenger", "4", worse, "does not beat the champion"),
        ),
    )
    html = render_html(report, "http://mlflow:5000/")
    assert html.count('<section class="card champion">') == html.count('<section class="card challenger">') == 1
    assert "challenger − champion" in html and html.count("-0.0100") == len(rows)
    assert html.count("<svg") == 2
    assert 'href="http://mlflow:5000/#/models/m/versions/4"' in html
    assert 'href="http://mlflow:5000/#/experiments/7/runs/abc123"' in html
    assert "item_knn" in html and "0.90x" in html  # cold-user@5: 0.18 against item_knn's 0.20


def test_page_shows_the_beyond_accuracy_of_every_ranker(logged: dict[str, float]) -> None:
    beyond = tuple(beyond_rows(logged))
    html = render_html(ModelReport("m", True, (_version("champion", "3", slice_scores(logged), "", beyond),)), "u")
    assert "Beyond accuracy, top 20" in html and "head share@20" in html
    table = html.split('<table class="beyond">')[1].split("</table>")[0]
    assert table.count("<tr") == 1 + len(beyond)  # the header and one row per (slice, ranker)
    assert table.count('<tr class="model">') == 5
    # warm / als: NDCG 0.40 -> coverage 0.9, novelty 4.0, diversity 0.7, head share 0.6
    assert '<td>warm</td><td>als</td><td class="n">0.9000</td><td class="n">4.0000</td>' in table
    assert '<td class="n">0.7000</td><td class="n">0.6000</td></tr>' in table
    without = render_html(ModelReport("m", True, (_version("champion", "3", slice_scores(logged)),)), "u")
    assert "Beyond accuracy" not in without  # a run logged before these metrics: no empty table


def test_page_with_a_champion_only_and_an_unevaluated_version() -> None:
    report = ModelReport("m", True, (_version("champion", "1", []),))
    html = render_html(report, "http://mlflow:5000")
    assert "No challenger" in html and "not evaluated" in html and "<svg" not in html


def test_page_escapes_what_it_did_not_write() -> None:
    report = ModelReport("<b>m</b>", True, (_version("champion", "1", [], decision="<script>x()</script>"),))
    html = render_html(report, "http://mlflow:5000")
    assert "<script>x()" not in html and "&lt;script&gt;x()" in html and "<b>m</b>" not in html
    assert "#/models/%3Cb%3Em%3C%2Fb%3E" in html  # the name is quoted in links


# ---------------------------------------------------------------- reading MLflow
def test_an_empty_store_has_no_model_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    report = load_report("recsys-cold-start", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert report == ModelReport("recsys-cold-start", registered=False)


def test_mlflow_ui_url_prefers_the_setting_then_a_tracking_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECSYS_MLFLOW_UI_URL", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert mlflow_ui_url() == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000/")
    assert mlflow_ui_url() == "http://mlflow:5000"
    monkeypatch.setenv("RECSYS_MLFLOW_UI_URL", "https://mlflow.internal")
    assert mlflow_ui_url() == "https://mlflow.internal"

"""The champion and the challenger of a registered model, side by side: per-slice scores of the model
against the baselines of its own run, a chart of them, and the page that shows both.

What is read from MLflow comes through `registry.aliased_versions` (every MLflow call lives there);
this module turns the logged metrics (``<slice>/<metric>/<ranker>``, see `evaluation.flat_metrics`)
back into rows per slice (NDCG against the baselines; coverage, novelty, diversity and popularity share of
every ranker), draws the NDCG as a self-contained SVG inside the page (so any registered version has its
chart, whatever artifacts its run logged) and renders the HTML page of the Airflow plugin from the Jinja2
templates in ``templates/``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = [
    "BeyondRow",
    "ModelReport",
    "SliceScores",
    "VersionReport",
    "chart_svg",
    "load_report",
    "mlflow_ui_url",
    "render_html",
    "beyond_rows",
    "drift_rows",
    "slice_scores",
]

PRIMARY = "cold_mean_ndcg"
BEYOND = ("coverage", "novelty", "diversity", "pop_share")  # `protocol.beyond.BEYOND_METRICS`, as logged
MODEL_COLOR = "#1f6feb"
BASELINE_COLORS = ("#9aa4b1", "#d4a55e", "#7fb17f", "#b58cc4", "#d98c8c", "#6fb7c4", "#a3a35c", "#6e7781")


@dataclass(frozen=True)
class SliceScores:
    """One slice of the protocol: the model's score and each baseline's (NDCG@k by default)."""

    name: str
    users: int | None
    model: float | None
    baselines: Mapping[str, float] = field(default_factory=dict)

    @property
    def best_baseline(self) -> tuple[str, float] | None:
        return max(self.baselines.items(), key=lambda kv: kv[1]) if self.baselines else None

    @property
    def ratio(self) -> float | None:
        """model / best baseline (None when either is missing or the baseline scored 0)."""
        best = self.best_baseline
        if self.model is None or best is None or best[1] == 0:
            return None
        return self.model / best[1]


@dataclass(frozen=True)
class BeyondRow:
    """One ranker on one slice: catalogue coverage, novelty, genre diversity and popularity share of its top k."""

    slice: str
    ranker: str
    coverage: float | None = None
    novelty: float | None = None
    diversity: float | None = None
    pop_share: float | None = None


@dataclass(frozen=True)
class VersionReport:
    """One aliased version of the registered model and the run that produced it."""

    alias: str
    version: str
    run_id: str
    run_name: str
    experiment_id: str
    created: str
    decision: str
    source: str
    k: int
    primary: float | None
    primary_baseline: float | None
    slices: tuple[SliceScores, ...]
    beyond: tuple[BeyondRow, ...] = ()  # empty for a run logged before these metrics existed
    # monitoring (`data.drift`, `evaluation.live`): the run's data drift against the previous snapshot (empty: a
    # first run, or a run logged before monitoring) and the then champion's live NDCG with what it says
    drift: tuple[tuple[str, float], ...] = ()
    live_ndcg: float | None = None
    live_note: str = ""


@dataclass(frozen=True)
class ModelReport:
    """``versions`` holds the champion first, then the challenger; ``registered`` is False when no
    model of that name exists yet."""

    model_name: str
    registered: bool
    versions: tuple[VersionReport, ...] = ()

    def get(self, alias: str) -> VersionReport | None:
        return next((v for v in self.versions if v.alias == alias), None)


# ---------------------------------------------------------------- metrics -> slices
def display_name(safe: str) -> str:
    """A slice's name as the protocol writes it (MLflow keys spell "@" and "+" as "_at_", "_plus_")."""
    return safe.replace("_at_", "@").replace("_plus_", "+")


def slice_scores(metrics: Mapping[str, float], metric: str = "ndcg") -> list[SliceScores]:
    """Rows per slice from flat metrics (raw or MLflow-safe keys), in the protocol's order.

    A slice is a key prefix with a ``<slice>/users`` count; its rankers are the ``<slice>/<metric>/<ranker>``
    keys, ``model`` apart and the derived ``best_baseline`` left out (it is recomputed).
    """
    users: dict[str, float] = {}
    scores: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 2 and parts[1] == "users":
            users[parts[0]] = value
        elif len(parts) == 3 and parts[1] == metric and parts[2] != "best_baseline" and _finite(value):
            scores.setdefault(parts[0], {})[parts[2]] = float(value)
    rows = []
    for safe in users:
        rankers = scores.get(safe, {})
        baselines = {name: rankers[name] for name in sorted(rankers) if name != "model"}
        rows.append(SliceScores(display_name(safe), int(users[safe]), rankers.get("model"), baselines))
    return sorted(rows, key=lambda row: _slice_order(row.name))


def beyond_rows(metrics: Mapping[str, float]) -> list[BeyondRow]:
    """The beyond-accuracy metrics per (slice, ranker) from flat metrics (raw or MLflow-safe keys), in the
    protocol's slice order, baselines by name and the model last; a missing or NaN value is None."""
    found: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[1] in BEYOND and _finite(value):
            found.setdefault((display_name(parts[0]), parts[2]), {})[parts[1]] = float(value)
    order = sorted(found, key=lambda sr: (_slice_order(sr[0]), sr[1] == "model", sr[1]))
    return [BeyondRow(name, ranker, **found[(name, ranker)]) for name, ranker in order]


def _slice_order(name: str) -> tuple:
    """cold-user@0, @5, @10, @20, then cold-user@0+text, the other cold slices, then warm (the table's order)."""
    match = re.fullmatch(r"cold-user@(\d+)(.*)", name)
    if match:
        return (0, bool(match.group(2)), int(match.group(1)), match.group(2))
    return (1 if name.startswith("cold-") else 2, False, 0, name)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------- MLflow -> report
def load_report(model_name: str, uri: str | None = None) -> ModelReport:
    """The champion and challenger of ``model_name`` in the registry at ``uri`` (default: the workdir's)."""
    from recsys_tasks.registry.store import CHALLENGER, CHAMPION, aliased_versions

    found = aliased_versions(model_name, (CHAMPION, CHALLENGER), uri)
    if found is None:
        return ModelReport(model_name, registered=False)
    return ModelReport(model_name, True, tuple(_version_report(alias, data) for alias, data in found.items()))


def _version_report(alias: str, data: Mapping[str, Any]) -> VersionReport:
    metrics, params = data["metrics"], data["params"]
    created = data.get("created_ms")
    when = datetime.fromtimestamp(created / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC") if created else ""
    return VersionReport(
        alias=alias,
        version=str(data["version"]),
        run_id=data["run_id"],
        run_name=data.get("run_name") or "",
        experiment_id=str(data.get("experiment_id") or ""),
        created=when,
        decision=data["version_tags"].get("decision", ""),
        source=data["run_tags"].get("source", ""),
        k=int(params.get("evaluate.k", 20)),
        primary=metrics.get(PRIMARY),
        primary_baseline=metrics.get(f"{PRIMARY}/best_baseline"),
        slices=tuple(slice_scores(metrics)),
        beyond=tuple(beyond_rows(metrics)),
        drift=tuple(drift_rows(metrics)),
        live_ndcg=metrics.get("champion_live_ndcg"),
        live_note=data["run_tags"].get("monitor.champion_live", ""),
    )


DRIFT_LABELS = {  # the extract stage's drift metrics as logged (``extract.<key>``), in the order shown
    "drift_new_user_share": "share of interactions by new users",
    "drift_new_item_share": "share of interactions on new items",
    "drift_volume_ratio": "interaction volume / previous",
    "drift_added_interactions": "interactions added since",
    "drift_rating_tv": "rating distribution distance (total variation)",
}


def drift_rows(metrics: Mapping[str, float]) -> list[tuple[str, float]]:
    """(label, value) of each drift figure the run logged, in `DRIFT_LABELS`' order."""
    logged = {key: metrics[f"extract.{key}"] for key in DRIFT_LABELS if f"extract.{key}" in metrics}
    return [(DRIFT_LABELS[key], float(value)) for key, value in logged.items()]


def mlflow_ui_url() -> str:
    """Where people open MLflow: ``RECSYS_MLFLOW_UI_URL``, else a tracking server's own URL, else the local UI."""
    url = os.environ.get("RECSYS_MLFLOW_UI_URL") or os.environ.get("MLFLOW_TRACKING_URI", "")
    return (url if url.startswith(("http://", "https://")) else "http://127.0.0.1:5000").rstrip("/")


# ---------------------------------------------------------------- the chart and the page
@lru_cache(maxsize=1)
def _templates():
    """The Jinja2 templates beside this module, HTML/XML-escaped by default."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=FileSystemLoader(Path(__file__).with_name("templates")),
        undefined=StrictUndefined,
        autoescape=select_autoescape(("html.j2", "svg.j2")),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def chart_svg(rows: Sequence[SliceScores], k: int = 20, title: str = "") -> str:
    """Horizontal grouped bars, one group per slice: each baseline (grey tones) and the model (blue), NDCG@k."""
    baselines = sorted({name for row in rows for name in row.baselines})
    colors = {name: BASELINE_COLORS[i % len(BASELINE_COLORS)] for i, name in enumerate(baselines)}
    colors["model"] = MODEL_COLOR
    values = [v for row in rows for v in (*row.baselines.values(), row.model) if v is not None]
    top = max(0.1, math.ceil(max(values, default=0.1) * 10) / 10)
    width, left, right, bar, gap, group_gap = 760, 170, 690, 13, 2, 14
    legend_rows = math.ceil((len(baselines) + 1) / 3)
    y = 52 + 18 * legend_rows
    scale = (right - left) / top
    groups = []
    for row in rows:  # bar geometry here; the markup in templates/chart.svg.j2
        named = [*row.baselines.items(), *([("model", row.model)] if row.model is not None else [])]
        height = max(len(named), 1) * (bar + gap)
        bars = [
            {
                "name": name,
                "value": value,
                "color": colors[name],
                "y": y + i * (bar + gap),
                "width": max(value * scale, 0.5),
            }
            for i, (name, value) in enumerate(named)
        ]
        groups.append({"name": row.name, "users": row.users, "top": y, "middle": y + height / 2, "bars": bars})
        y += height + group_gap
    ticks = [{"x": left + i / 10 * scale, "value": i / 10} for i in range(int(round(top * 10)) + 1)]
    legend = [
        {"name": name, "color": colors[name], "x": left + (i % 3) * 165, "y": 40 + (i // 3) * 18}
        for i, name in enumerate([*baselines, "model"])
    ]
    return (
        _templates()
        .get_template("chart.svg.j2")
        .render(
            width=width,
            total=y + 30,
            left=left,
            bar_height=bar,
            heading=title or "model vs baselines",
            k=k,
            groups=groups,
            ticks=ticks,
            legend=legend,
            axis_y=y,
            grid_top=52 + 18 * legend_rows - 6,
        )
    )


def render_html(report: ModelReport, mlflow_url: str | None = None) -> str:
    """The plugin's page: each aliased version's card (scores, chart, links to MLflow) and, when both
    exist, the champion's and challenger's model scores per slice side by side."""
    from markupsafe import Markup

    mlflow_url = (mlflow_url or mlflow_ui_url()).rstrip("/")
    name = quote(report.model_name, safe="")
    champion, challenger = report.get("champion"), report.get("challenger")
    cards = [
        {
            "version": v,
            "version_link": f"{mlflow_url}/#/models/{name}/versions/{quote(v.version)}",
            "run_link": f"{mlflow_url}/#/experiments/{quote(v.experiment_id)}/runs/{quote(v.run_id)}",
            "chart": Markup(chart_svg(v.slices, v.k, f"{v.alias} v{v.version}") if v.slices else ""),
        }
        for v in report.versions
    ]
    return (
        _templates()
        .get_template("model_report.html.j2")
        .render(
            report=report,
            model_link=f"{mlflow_url}/#/models/{name}",
            champion=champion,
            challenger=challenger,
            theirs={s.name: s.model for s in challenger.slices} if challenger else {},
            cards=cards,
        )
    )

"""The champion and the challenger of a registered model, side by side: per-slice scores of the model
against the baselines of its own run, a chart of them, and the page that shows both.

What is read from MLflow comes through `registry.aliased_versions` (every MLflow call lives there);
this module turns the logged metrics (``<slice>/<metric>/<ranker>``, see `evaluation.flat_metrics`)
back into rows per slice, draws them as a self-contained SVG inside the page (so any registered
version has its chart, whatever artifacts its run logged) and renders the HTML page of the Airflow plugin.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from typing import Any, Mapping, Sequence
from urllib.parse import quote

__all__ = ["ModelReport", "SliceScores", "VersionReport", "chart_svg", "load_report",
           "mlflow_ui_url", "render_html", "slice_scores"]

PRIMARY = "cold_mean_ndcg"
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
    when = datetime.fromtimestamp(created / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if created else ""
    return VersionReport(
        alias=alias, version=str(data["version"]), run_id=data["run_id"], run_name=data.get("run_name") or "",
        experiment_id=str(data.get("experiment_id") or ""), created=when,
        decision=data["version_tags"].get("decision", ""), source=data["run_tags"].get("source", ""),
        k=int(params.get("evaluate.k", 20)), primary=metrics.get(PRIMARY),
        primary_baseline=metrics.get(f"{PRIMARY}/best_baseline"), slices=tuple(slice_scores(metrics)))


def mlflow_ui_url() -> str:
    """Where people open MLflow: ``RECSYS_MLFLOW_UI_URL``, else a tracking server's own URL, else the local UI."""
    url = os.environ.get("RECSYS_MLFLOW_UI_URL") or os.environ.get("MLFLOW_TRACKING_URI", "")
    return (url if url.startswith(("http://", "https://")) else "http://127.0.0.1:5000").rstrip("/")


# ---------------------------------------------------------------- the chart
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
    out: list[str] = []
    for row in rows:
        bars = [(name, value) for name, value in row.baselines.items()] + (
            [("model", row.model)] if row.model is not None else [])
        height = max(len(bars), 1) * (bar + gap)
        out.append(f'<text x="{left - 10}" y="{y + height / 2 - 2:.1f}" text-anchor="end" class="slice">{escape(row.name)}</text>')
        if row.users is not None:
            out.append(f'<text x="{left - 10}" y="{y + height / 2 + 11:.1f}" text-anchor="end" class="users">'
                       f'{row.users} users</text>')
        for i, (name, value) in enumerate(bars):
            by = y + i * (bar + gap)
            w = max(value * scale, 0.5)
            weight = ' font-weight="bold"' if name == "model" else ""
            out.append(f'<rect x="{left}" y="{by}" width="{w:.1f}" height="{bar}" fill="{colors[name]}">'
                       f'<title>{escape(row.name)} / {escape(name)}: {value:.4f}</title></rect>')
            out.append(f'<text x="{left + w + 4:.1f}" y="{by + bar - 3}" class="value"{weight}>{value:.3f} {escape(name)}</text>')
        if not bars:
            out.append(f'<text x="{left + 4}" y="{y + bar - 3}" class="users">no scores</text>')
        y += height + group_gap
    axis_y = y
    ticks = []
    for i in range(int(round(top * 10)) + 1):
        value = i / 10
        x = left + value * scale
        ticks.append(f'<line x1="{x:.1f}" y1="{52 + 18 * legend_rows - 6}" x2="{x:.1f}" y2="{axis_y}" class="grid"/>'
                     f'<text x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle" class="tick">{value:.1f}</text>')
    legend = []
    for i, name in enumerate([*baselines, "model"]):
        lx, ly = left + (i % 3) * 165, 40 + (i // 3) * 18
        legend.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{colors[name]}"/>'
                      f'<text x="{lx + 14}" y="{ly}" class="legend">{escape(name)}</text>')
    heading = escape(title or "model vs baselines")
    empty = [] if rows else [f'<text x="{left}" y="{y + 10}" class="users">no evaluation metrics in this run</text>']
    total = axis_y + 30
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total}" viewBox="0 0 {width} {total}" '
            f'role="img" aria-label="{heading}: NDCG@{k} per slice, model vs baselines">'
            '<style>text{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;fill:#1f2328}'
            '.title{font-size:15px;font-weight:600}.slice{font-size:12px;font-weight:600}.users,.tick{font-size:10px;'
            'fill:#656d76}.value,.legend{font-size:10px}.grid{stroke:#d0d7de;stroke-width:1}</style>'
            f'<rect width="{width}" height="{total}" fill="#ffffff"/>'
            f'<text x="12" y="22" class="title">{heading}: NDCG@{k} per slice</text>'
            + "".join(legend) + "".join(ticks) + "".join(out) + "".join(empty) + "</svg>")


# ---------------------------------------------------------------- the page
def render_html(report: ModelReport, mlflow_url: str | None = None) -> str:
    """The plugin's page: each aliased version's card (scores, chart, links to MLflow) and, when both
    exist, the champion's and challenger's model scores per slice side by side."""
    mlflow_url = (mlflow_url or mlflow_ui_url()).rstrip("/")
    name = report.model_name
    model_link = escape(f"{mlflow_url}/#/models/{quote(name, safe='')}")
    parts = [f'<h1>{escape(name)}: champion and challenger</h1>',
             f'<p class="links">Registered model in MLflow: <a href="{model_link}" target="_blank" rel="noopener">'
             f'{model_link}</a></p>']
    if not report.registered:
        parts.append(f'<div class="empty"><h2>No model registered yet</h2><p>MLflow has no registered model named '
                     f'<code>{escape(name)}</code>. Trigger the DAG <code>recsys_cold_start</code> (or run '
                     '<code>make run</code>): its <code>register</code> task registers the model and sets the '
                     '<code>champion</code> alias.</p></div>')
    elif not report.versions:
        parts.append(f'<div class="empty"><h2>No champion or challenger</h2><p><code>{escape(name)}</code> is '
                     'registered, but neither alias is set on any version.</p></div>')
    champion, challenger = report.get("champion"), report.get("challenger")
    if champion and challenger:
        parts.append(_comparison(champion, challenger))
    for version in report.versions:
        parts.append(_card(version, name, mlflow_url))
    if report.registered and champion and not challenger:
        parts.append('<p class="note">No challenger: no candidate has lost to the champion yet.</p>')
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<title>{escape(name)}: champion and challenger</title><style>{_CSS}</style></head><body>'
            + "".join(parts) + f"<script>{_OPEN_FROM_FRAME}</script></body></html>")


def _card(v: VersionReport, name: str, mlflow_url: str) -> str:
    version_link = escape(f"{mlflow_url}/#/models/{quote(name, safe='')}/versions/{quote(v.version)}")
    run_link = escape(f"{mlflow_url}/#/experiments/{quote(v.experiment_id)}/runs/{quote(v.run_id)}")
    primary = "" if v.primary is None else f"{v.primary:.4f}"
    baseline = "" if v.primary_baseline is None else f" (best baselines: {v.primary_baseline:.4f})"
    rows = "".join(
        f'<tr><td>{escape(s.name)}</td><td class="n">{"" if s.users is None else s.users}</td>'
        f'<td class="n"><b>{_num(s.model)}</b></td><td>{escape(s.best_baseline[0]) if s.best_baseline else ""}</td>'
        f'<td class="n">{_num(s.best_baseline[1] if s.best_baseline else None)}</td>'
        f'<td class="n">{"" if s.ratio is None else f"{s.ratio:.2f}x"}</td></tr>' for s in v.slices)
    table = (f'<table><thead><tr><th>slice</th><th>users</th><th>model NDCG@{v.k}</th><th>best baseline</th>'
             f'<th>its NDCG@{v.k}</th><th>model / best</th></tr></thead><tbody>{rows}</tbody></table>'
             if v.slices else '<p class="note">This version was not evaluated (trained without holdout).</p>')
    chart = chart_svg(v.slices, v.k, f"{v.alias} v{v.version}") if v.slices else ""
    return (f'<section class="card {escape(v.alias)}"><h2><span class="alias">{escape(v.alias)}</span> '
            f'version {escape(v.version)}</h2><dl>'
            f'<dt>cold-start NDCG@{v.k} (mean of cold slices)</dt><dd><b>{primary}</b>{baseline}</dd>'
            f'<dt>run</dt><dd>{escape(v.run_name)} <a href="{run_link}" target="_blank" rel="noopener">MLflow run</a> · '
            f'<a href="{version_link}" target="_blank" rel="noopener">MLflow version</a></dd>'
            f'<dt>registered</dt><dd>{escape(v.created)}</dd><dt>data source</dt><dd>{escape(v.source)}</dd>'
            f'<dt>promotion decision</dt><dd>{escape(v.decision)}</dd></dl>{table}'
            f'<div class="chart">{chart}</div></section>')


def _comparison(champion: VersionReport, challenger: VersionReport) -> str:
    theirs = {s.name: s.model for s in challenger.slices}
    rows = []
    for s in champion.slices:
        other = theirs.get(s.name)
        delta = "" if s.model is None or other is None else f"{other - s.model:+.4f}"
        rows.append(f'<tr><td>{escape(s.name)}</td><td class="n">{_num(s.model)}</td><td class="n">{_num(other)}</td>'
                    f'<td class="n">{delta}</td></tr>')
    return (f'<section class="card"><h2>Model NDCG@{champion.k} per slice</h2><table><thead><tr><th>slice</th>'
            f'<th>champion v{escape(champion.version)}</th><th>challenger v{escape(challenger.version)}</th>'
            f'<th>challenger − champion</th></tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


# Airflow shows the page in a sandboxed iframe that may not open tabs itself: a link meant for a new
# tab is opened by the (same-origin) Airflow page around it; anywhere else the link works as usual.
_OPEN_FROM_FRAME = ("document.addEventListener('click',function(e){var a=e.target.closest('a[target=_blank]');"
                    "if(!a||window.top===window)return;try{var d=window.top.document,x=d.createElement('a');"
                    "x.href=a.href;x.target='_blank';x.rel='noopener';d.body.appendChild(x);x.click();x.remove();"
                    "e.preventDefault();}catch(err){}});")

_CSS = ("body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#1f2328;background:#fff;"
        "margin:16px 24px;font-size:14px}h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:0 0 8px}"
        ".links,.note{color:#656d76}.card{border:1px solid #d0d7de;border-radius:8px;padding:12px 16px;margin:14px 0}"
        ".card.champion{border-left:5px solid #1a7f37}.card.challenger{border-left:5px solid #bf8700}"
        ".alias{text-transform:uppercase;font-size:12px;letter-spacing:.05em;padding:2px 6px;border-radius:4px;"
        "background:#eef1f4}dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0 0 10px}"
        "dt{color:#656d76}dd{margin:0}table{border-collapse:collapse;margin:6px 0 10px}th,td{padding:3px 10px;"
        "border-bottom:1px solid #eaeef2;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}"
        ".empty{border:1px dashed #d0d7de;border-radius:8px;padding:12px 16px;margin:14px 0}a{color:#0969da}"
        ".chart svg{max-width:100%;height:auto}")

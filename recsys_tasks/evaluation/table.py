"""Score every slice with its baselines and the model; tabulate and flatten the results.

One row per (slice, ranker) in a DataFrame is the single source for the report table
(`summary_table` / `to_markdown`) and for the tracked scalars (`flat_metrics`), so the
numbers logged and the numbers shown can never disagree. Each row carries the slice's users,
how many of them were evaluated (a seeded sample past ``evaluate.max_users``) and the half-width
of a 95% confidence interval of the mean NDCG, by the normal approximation over the users evaluated,
and the beyond-accuracy metrics of its top-k lists (`protocol.beyond`), shown in `beyond_table`.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_tasks.protocol.beyond import BEYOND_METRICS, BeyondAccuracy
from recsys_tasks.protocol.metrics import _broadcast, ranking_metrics, top_k
from recsys_tasks.protocol.queries import Scorer
from recsys_tasks.protocol.slices import Slice

__all__ = ["beyond_table", "ci95", "evaluate_slices", "flat_metrics", "mlflow_safe", "summary_table", "to_markdown"]

log = logging.getLogger(__name__)

MODEL = "model"
RATIO = "model / best baseline"
CI = "model ±95%"
Z95 = 1.959963984540054  # the standard normal's 0.975 quantile


def evaluate_slices(
    slices: Sequence[Slice],
    scorers: Mapping[str, Scorer],
    model: Scorer | None = None,
    k: int = 20,
    chunk_size: int = 256,
    item_popularity: np.ndarray | None = None,
    item_genres: sp.spmatrix | np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per (slice, ranker): users (in the slice), evaluated, ndcg@k, ndcg_ci95 (half-width of the
    95% interval), recall@k, auc (cold-item only), coverage@k, novelty@k, diversity@k, pop_share@k, seconds.

    Each slice is scored by the baselines it names that ``scorers`` holds, then by ``model``;
    queries go in chunks of ``chunk_size`` so memory stays at chunk x n_items. The beyond-accuracy
    columns need ``item_popularity`` (training interactions per item; None: all four NaN) and, for
    diversity, ``item_genres`` ((n_items, n_genres) 0/1; None: diversity NaN).
    """
    beyond_columns = [f"{m}@{k}" for m in BEYOND_METRICS]
    rows = []
    for s in slices:
        missing = [name for name in s.baselines if name not in scorers]
        if missing:
            log.warning("slice %s: no scorer for baseline(s) %s", s.name, ", ".join(missing))
        rankers = [(name, scorers[name], "baseline") for name in s.baselines if name in scorers]
        if model is not None:
            rankers.append((MODEL, model, MODEL))
        for name, scorer, kind in rankers:
            start = time.perf_counter()
            beyond = None if item_popularity is None else BeyondAccuracy(item_popularity, item_genres, k)
            values = _score_slice(s, scorer, k, chunk_size, with_auc=s.name == "cold-item", beyond=beyond)
            extra = beyond.result() if beyond is not None else dict.fromkeys(beyond_columns, math.nan)
            rows.append(
                {
                    "slice": s.name,
                    "ranker": name,
                    "kind": kind,
                    "users": s.n_population,
                    "evaluated": s.n_users,
                    f"ndcg@{k}": _mean(values["ndcg"]),
                    "ndcg_ci95": ci95(values["ndcg"]),
                    f"recall@{k}": _mean(values["recall"]),
                    "auc": _mean(values["auc"]) if "auc" in values else math.nan,
                    **extra,
                    "seconds": time.perf_counter() - start,
                }
            )
            log.info("%s / %s: ndcg@%d=%.4f", s.name, name, k, rows[-1][f"ndcg@{k}"])
    columns = [
        "slice",
        "ranker",
        "kind",
        "users",
        "evaluated",
        f"ndcg@{k}",
        "ndcg_ci95",
        f"recall@{k}",
        "auc",
        *beyond_columns,
        "seconds",
    ]
    return pd.DataFrame(rows, columns=columns)


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The protocol's report: slice | users | evaluated | each baseline's NDCG@k | model | model ±95% | model / best
    baseline ("evaluated" and "±95%" where the frame has them)."""
    ndcg = _metric_column(frame, "ndcg")
    slices = list(dict.fromkeys(frame["slice"]))
    baselines = list(dict.fromkeys(frame.loc[frame["kind"] == "baseline", "ranker"]))
    wide = frame.pivot_table(index="slice", columns="ranker", values=ndcg, aggfunc="first", sort=False)
    wide = wide.reindex(index=slices, columns=baselines + ([MODEL] if MODEL in set(frame["ranker"]) else []))
    per_slice = frame.groupby("slice", sort=False)
    table = pd.DataFrame({"slice": slices, "users": per_slice["users"].first().reindex(slices).to_numpy()})
    if "evaluated" in frame:
        table["evaluated"] = per_slice["evaluated"].first().reindex(slices).to_numpy()
    for column in wide.columns:
        table[column] = wide[column].to_numpy()
    if MODEL in table and "ndcg_ci95" in frame:
        model = frame[frame["ranker"] == MODEL].set_index("slice")["ndcg_ci95"]
        table[CI] = model.reindex(slices).to_numpy()
    if MODEL in table:
        best = table[baselines].max(axis=1, skipna=True).to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            table[RATIO] = table[MODEL].to_numpy() / best
    return table


def beyond_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The beyond-accuracy report: slice | ranker | coverage@k | novelty@k | diversity@k | pop_share@k,
    one row per (slice, ranker) in the frame's order (the model last in each slice, as scored)."""
    columns = [_metric_column(frame, metric) for metric in BEYOND_METRICS]
    return frame[["slice", "ranker", *columns]].reset_index(drop=True)


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub Markdown table (no tabulate): scores to ``digits`` places, ratios as 1.23x."""
    header = [str(c) for c in table.columns]
    body = [
        [_cell(value, column, digits) for column, value in zip(table.columns, row)]
        for row in table.itertuples(index=False)
    ]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if n else (":" + "-" * (w + 1)) for w, n in zip(widths, numeric)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in body)]) + "\n"


def flat_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """Scalars for tracking: "<slice>/<ndcg|recall|auc>/<ranker|best_baseline>", "<slice>/users",
    "<slice>/users_evaluated", "<slice>/ndcg_ci95/<ranker>" (half-width of the 95% interval) and
    "<slice>/<coverage|novelty|diversity|pop_share>/<ranker>" (at the frame's k; no "best": higher is not
    better for all of them) where the frame has them, and "cold_mean_ndcg" (mean model NDCG over the cold
    slices) with its best-baseline twin."""
    columns = {"ndcg": _metric_column(frame, "ndcg"), "recall": _metric_column(frame, "recall"), "auc": "auc"}
    beyond = {m: c for m in BEYOND_METRICS if (c := _optional_column(frame, m)) is not None}
    out: dict[str, float] = {}
    best_ndcg: dict[str, float] = {}
    for name, rows in frame.groupby("slice", sort=False):
        out[f"{name}/users"] = float(rows["users"].iloc[0])
        if "evaluated" in rows:
            out[f"{name}/users_evaluated"] = float(rows["evaluated"].iloc[0])
        if "ndcg_ci95" in rows:
            out.update(
                {f"{name}/ndcg_ci95/{r}": float(v) for r, v in zip(rows["ranker"], rows["ndcg_ci95"]) if not pd.isna(v)}
            )
        for metric, column in beyond.items():
            out.update(
                {f"{name}/{metric}/{r}": float(v) for r, v in zip(rows["ranker"], rows[column]) if not pd.isna(v)}
            )
        baselines = rows[rows["kind"] == "baseline"]
        for metric, column in columns.items():
            for ranker, value in zip(rows["ranker"], rows[column]):
                if not pd.isna(value):
                    out[f"{name}/{metric}/{ranker}"] = float(value)
            if baselines[column].notna().any():
                out[f"{name}/{metric}/best_baseline"] = float(baselines[column].max())
        best_ndcg[name] = out.get(f"{name}/ndcg/best_baseline", math.nan)
    cold = [name for name in dict.fromkeys(frame["slice"]) if str(name).startswith("cold-")]
    model_cold = [out[f"{name}/ndcg/{MODEL}"] for name in cold if f"{name}/ndcg/{MODEL}" in out]
    if cold and len(model_cold) == len(cold):
        out["cold_mean_ndcg"] = float(np.mean(model_cold))
    if cold and all(not math.isnan(best_ndcg[name]) for name in cold):
        out["cold_mean_ndcg/best_baseline"] = float(np.mean([best_ndcg[name] for name in cold]))
    return out


def mlflow_safe(key: str) -> str:
    """A metric key MLflow accepts ("@" -> "_at_", "+" -> "_plus_", other odd characters -> "_")."""
    key = key.replace("@", "_at_").replace("+", "_plus_")
    return re.sub(r"[^0-9A-Za-z_\-. :/]", "_", key)


def ci95(values: np.ndarray) -> float:
    """Half-width of the normal-approximation 95% interval of the mean of the non-NaN values (NaN below 2)."""
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan
    return float(Z95 * values.std(ddof=1) / math.sqrt(len(values)))


# ---------------------------------------------------------------------------- helpers
def _score_slice(
    s: Slice, scorer: Scorer, k: int, chunk_size: int, with_auc: bool, beyond: BeyondAccuracy | None = None
) -> dict[str, np.ndarray]:
    """Per-query metrics of one ranker on one slice, scoring ``chunk_size`` queries at a time; each chunk's
    top-k lists (slots past a query's candidates left empty, -1) are folded into ``beyond``."""
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, s.n_users, chunk_size):
        queries, candidates, positives = s.rows(start, start + chunk_size)
        scores = np.asarray(scorer.score(queries))
        n_items = s.n_items
        if scores.shape != (len(queries), n_items):
            raise ValueError(
                f"{getattr(scorer, 'name', scorer)!s} returned scores of shape {scores.shape} "
                f"for {len(queries)} queries x {n_items} items"
            )
        if np.isnan(scores).any():
            raise ValueError(f"{getattr(scorer, 'name', scorer)!s} returned NaN scores on slice {s.name}")
        top = top_k(scores, _broadcast(candidates, scores.shape), k)
        for key, values in ranking_metrics(scores, candidates, positives, k, with_auc=with_auc, top=top).items():
            parts.setdefault(key, []).append(values)
        if beyond is not None:
            listed = np.take_along_axis(_broadcast(candidates, scores.shape), top, axis=1)
            lists = np.full((len(top), k), -1, dtype=np.int64)  # fewer than k items: the rest stay empty
            lists[:, : top.shape[1]] = np.where(listed, top, -1)
            beyond.add(lists)
    return {key: np.concatenate(values) for key, values in parts.items()}


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else math.nan


def _metric_column(frame: pd.DataFrame, metric: str) -> str:
    matches = [c for c in frame.columns if str(c).startswith(f"{metric}@")]
    if len(matches) != 1:
        raise ValueError(f"expected one {metric}@k column, found {matches}")
    return matches[0]


def _optional_column(frame: pd.DataFrame, metric: str) -> str | None:
    """The frame's "<metric>@k" column, None where it has none (a frame from before that metric)."""
    matches = [c for c in frame.columns if str(c).startswith(f"{metric}@")]
    return _metric_column(frame, metric) if matches else None


def _cell(value: Any, column: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column == RATIO:
        return f"{value:.2f}x"
    if column == CI:
        return f"±{value:.{digits}f}"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)

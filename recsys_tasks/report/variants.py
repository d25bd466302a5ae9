"""Champion against challenger on what users did next: the API's exposure log joined with later interactions.

An exposure (one line of the log `serving.variants.ExposureLog` writes) says which variant answered a
pseudonymised user when, and with which items. The interactions (a CSV or RecBole file, or a SQL
source's ``interactions`` table) are pseudonymised with the same key (``RECSYS_PSEUDONYM_KEY``) and
joined on the user: an interaction is a *hit* when its item was among the first ``k`` items of an
exposure of that user strictly before it. Per variant:

- users exposed: distinct pseudonymised users it answered (users answered by both variants, which
  happens only when the share or the challenger changed, are left out of both and counted apart);
- hit rate@k: the share of those users with at least one hit, with a Wilson 95% interval;
- mean rating: over the users with a hit, the mean of each one's hit ratings (each user weighs one),
  with a normal-approximation 95% interval;
- the difference challenger - champion of both, with a normal-approximation 95% interval.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_tasks.registry.privacy import KEY_ENV, pseudonym

__all__ = [
    "Comparison",
    "Difference",
    "ExposureLogError",
    "VariantStats",
    "compare",
    "compare_variants",
    "exposure_files",
    "format_comparison",
    "read_exposures",
    "read_interactions",
]

VARIANTS = ("champion", "challenger")  # `serving.variants.VARIANTS` (report may not import serving)
KEY_CHECK = "recsys-exposure-log/key-check"  # `serving.variants.KEY_CHECK`: its pseudonym names the log's key
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
FIELDS: dict[str, type | tuple[type, ...]] = {
    "ts": (int, float),
    "variant": str,
    "user": (str, type(None)),
    "items": list,
    "key": str,
}


class ExposureLogError(ValueError):
    """An exposure log that cannot be read as the API writes it; the message names the file and line."""


@dataclass(frozen=True)
class VariantStats:
    variant: str
    exposures: int  # responses logged with a user
    users: int  # distinct users exposed (those answered by both variants left out)
    hit_users: int
    hit_rate: float | None
    hit_rate_ci: tuple[float, float] | None
    mean_rating: float | None  # over hit users, each user's mean hit rating
    mean_rating_ci: tuple[float, float] | None
    rated_users: int  # hit users whose hits carry a rating


@dataclass(frozen=True)
class Difference:
    """challenger - champion."""

    hit_rate: float | None
    hit_rate_ci: tuple[float, float] | None
    mean_rating: float | None
    mean_rating_ci: tuple[float, float] | None


@dataclass(frozen=True)
class Comparison:
    k: int | None
    variants: dict[str, VariantStats]
    difference: Difference
    users_in_both: int  # answered by both variants: left out
    exposures_without_user: int  # anonymous requests: nothing to join
    interactions_read: int
    files: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- the exposure log
def exposure_files(path: str | Path) -> list[Path]:
    """The log and its rotated files (``LOG.1`` .. ``LOG.N``), oldest first; none found: FileNotFoundError."""
    path = Path(path)
    rotated = []
    n = 1
    while (path.parent / f"{path.name}.{n}").exists():
        rotated.append(path.parent / f"{path.name}.{n}")
        n += 1
    files = [*reversed(rotated), *([path] if path.exists() else [])]
    if not files:
        raise FileNotFoundError(f"exposure log {path} not found (nor {path.name}.1, ...)")
    return files


def read_exposures(path: str | Path) -> tuple[pd.DataFrame, list[Path]]:
    """Every exposure of the log and its rotations: columns ts, variant, user, items; the files read.
    A line that is not a record of the API's log raises `ExposureLogError` naming file, line and field;
    records pseudonymised under another key than this process's raise too (nothing would join)."""
    files = exposure_files(path)
    key = pseudonym(KEY_CHECK)
    rows: list[dict[str, Any]] = []
    for file in files:
        for number, record in _records(file):
            where = f"{file}, line {number}"
            for name, kind in FIELDS.items():
                if name not in record:
                    raise ExposureLogError(f"{where}: field {name!r} is missing")
                value = record[name]
                if not isinstance(value, kind) or isinstance(value, bool):
                    raise ExposureLogError(f"{where}: field {name!r} has the wrong type ({type(value).__name__})")
            if record["variant"] not in VARIANTS:
                raise ExposureLogError(f"{where}: field 'variant' is {record['variant'][:40]!r}, not one of {VARIANTS}")
            if not math.isfinite(record["ts"]):
                raise ExposureLogError(f"{where}: field 'ts' is not a finite time")
            if record["key"] != key:
                raise ExposureLogError(
                    f"{where}: the users were pseudonymised under another key than this process's: set {KEY_ENV} "
                    "to the key the API ran with (unset there, its key was random and the log cannot be joined)"
                )
            rows.append({k: record[k] for k in ("ts", "variant", "user", "items")})
    frame = pd.DataFrame(rows, columns=["ts", "variant", "user", "items"])
    return frame.astype({"ts": float}), files


def _records(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with file.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                if not line.endswith("\n"):  # the last line cut short by a crash mid-write
                    continue
                raise ExposureLogError(f"{file}, line {number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ExposureLogError(f"{file}, line {number}: not a JSON object")
            yield number, record


# ---------------------------------------------------------------- the interactions
def read_interactions(source: str, users: set[str], since: float, chunk_rows: int = 500_000) -> pd.DataFrame:
    """The interactions of the pseudonymised ``users`` at or after ``since`` (epoch seconds): columns user
    (pseudonym), item_id, rating (NaN where empty), timestamp (epoch seconds). ``source``: a CSV file
    (``user_id,item_id,rating,timestamp``, the CSV source's names and aliases), a RecBole ``.inter`` file,
    or a SQL source (a SQLAlchemy URI, or ``sql`` with ``RECSYS_SOURCE_URI``) with an ``interactions`` table."""
    from recsys_tasks.data.sql import is_sql_source

    chunks = _sql_chunks(source, chunk_rows) if is_sql_source(source) else _file_chunks(Path(source), chunk_rows)
    kept = [_ours(chunk, label, users, since) for chunk, label in chunks]
    kept = [k for k in kept if len(k)]
    if not kept:
        return pd.DataFrame({"user": [], "item_id": [], "rating": [], "timestamp": []}).astype(
            {"user": str, "item_id": str, "rating": float, "timestamp": float}
        )
    return pd.concat(kept, ignore_index=True)


def _file_chunks(path: Path, chunk_rows: int) -> Iterator[tuple[pd.DataFrame, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"interactions file {path} not found")
    recbole = path.suffix == ".inter"
    reader = pd.read_csv(path, sep="\t" if recbole else ",", dtype=str, keep_default_na=False, chunksize=chunk_rows)
    with reader:
        for chunk in reader:
            if recbole:  # "user_id:token" -> "user_id"
                chunk = chunk.rename(columns=lambda c: c.split(":", 1)[0])
            yield chunk, str(path)


def _sql_chunks(source: str, chunk_rows: int) -> Iterator[tuple[pd.DataFrame, str]]:
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    from recsys_tasks.data.sql import display_uri, resolve_uri

    uri = resolve_uri(source)
    label = f"{display_uri(uri)} table 'interactions'"
    try:
        engine = sa.create_engine(uri, poolclass=NullPool)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise ValueError(f"interactions {display_uri(uri)!r} is not a usable SQLAlchemy URI: {exc}") from None
    try:
        with engine.connect() as conn:
            table = sa.Table("interactions", sa.MetaData(), autoload_with=conn)
            query = sa.select(*table.columns)
            for chunk in pd.read_sql(query, conn, chunksize=chunk_rows):
                text = [c for c in chunk.columns if c != "timestamp"]
                chunk[text] = chunk[text].astype(object).where(chunk[text].notna(), "").astype(str)  # NULL: ""
                yield chunk, label
    except sa.exc.NoSuchTableError:
        raise ValueError(f"{display_uri(uri)}: no table 'interactions'") from None
    except sa.exc.SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ValueError(f"{display_uri(uri)}: cannot read the interactions: {first}") from None
    finally:
        engine.dispose()


def _ours(chunk: pd.DataFrame, label: str, users: set[str], since: float) -> pd.DataFrame:
    """The chunk's rows of exposed users at or after ``since``, canonical and pseudonymised; bad values named."""
    from recsys_tasks.data.tables import canonical_columns

    chunk = canonical_columns("interactions", chunk, label)
    times = _epoch_seconds(chunk["timestamp"])
    bad = times.isna() & chunk["timestamp"].astype(str).str.strip().ne("")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        where = f"{label}: column 'timestamp', row {chunk.index[row] + 1}"
        raise ValueError(f"{where}: not a time (epoch seconds or ISO 8601)")
    ids = chunk["user_id"].astype(str)
    pseudonyms = ids.map({u: pseudonym(u) for u in ids.unique()})
    keep = pseudonyms.isin(users).to_numpy() & (times >= since).to_numpy()
    part = chunk[keep]
    ratings = pd.to_numeric(part["rating"].replace("", np.nan), errors="coerce")
    bad_rating = ratings.isna() & part["rating"].notna() & part["rating"].astype(str).str.strip().ne("")
    if bad_rating.any():
        row = part.index[int(np.flatnonzero(bad_rating.to_numpy())[0])]
        raise ValueError(f"{label}: column 'rating', row {row + 1}: not a number")
    return pd.DataFrame(
        {
            "user": pseudonyms[keep].to_numpy(),
            "item_id": part["item_id"].astype(str).to_numpy(),
            "rating": ratings.to_numpy(dtype=float),
            "timestamp": times[keep].to_numpy(dtype=float),
        }
    )


def _epoch_seconds(values: pd.Series) -> pd.Series:
    """Epoch seconds of numbers, ISO 8601 text or datetimes; NaN where empty or unparseable."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = pd.to_datetime(values, utc=True)
        return (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    numeric = pd.to_numeric(values, errors="coerce").astype(float)
    text = numeric.isna() & values.astype(str).str.strip().ne("")
    if text.any():
        parsed = pd.to_datetime(values[text].astype(str), errors="coerce", utc=True, format="ISO8601")
        numeric[text] = (parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return numeric


# ---------------------------------------------------------------- the comparison
def compare(
    exposures: pd.DataFrame,
    interactions: pd.DataFrame,
    k: int | None = None,
    files: Iterable[str | Path] = (),
) -> Comparison:
    """Per variant, the users exposed, their hit rate@k and the mean rating of their hits (see the module)."""
    if k is not None and k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    anonymous = int(exposures["user"].isna().sum())
    known = exposures[exposures["user"].notna()]
    variants_of = known.groupby("user")["variant"].nunique()
    both = set(variants_of.index[variants_of > 1])
    known = known[~known["user"].isin(both)]
    shown = known.assign(item_id=known["items"].map(lambda items: [str(i) for i in items[:k]]))
    shown = shown.explode("item_id").dropna(subset=["item_id"])
    first = shown.groupby(["user", "item_id"], as_index=False).agg(first_ts=("ts", "min"), variant=("variant", "first"))
    hits = interactions.merge(first, on=["user", "item_id"])
    hits = hits[hits["timestamp"] > hits["first_ts"]]
    per_user = hits.groupby("user").agg(variant=("variant", "first"), rating=("rating", "mean"))
    stats: dict[str, VariantStats] = {}
    rates: dict[str, tuple[float, float, int] | None] = {}
    means: dict[str, tuple[float, float, int] | None] = {}
    for variant in VARIANTS:
        mine = known[known["variant"] == variant]
        n = int(mine["user"].nunique())
        hit_users = per_user[per_user["variant"] == variant]
        rated = hit_users["rating"].dropna().to_numpy(dtype=float)
        rate = len(hit_users) / n if n else None
        rates[variant] = (rate, rate * (1 - rate) / n, n) if rate is not None else None
        mean = float(rated.mean()) if len(rated) else None
        var = float(rated.var(ddof=1)) / len(rated) if len(rated) > 1 else None
        means[variant] = (mean, var, len(rated)) if mean is not None and var is not None else None
        stats[variant] = VariantStats(
            variant=variant,
            exposures=len(mine),
            users=n,
            hit_users=len(hit_users),
            hit_rate=rate,
            hit_rate_ci=_wilson(len(hit_users), n) if n else None,
            mean_rating=mean,
            mean_rating_ci=_normal(mean, var) if mean is not None and var is not None else None,
            rated_users=len(rated),
        )
    champion, challenger = stats["champion"], stats["challenger"]
    rate_diff = _diff(rates["champion"], rates["challenger"])
    mean_diff = _diff(means["champion"], means["challenger"])
    difference = Difference(
        hit_rate=None
        if champion.hit_rate is None or challenger.hit_rate is None
        else challenger.hit_rate - champion.hit_rate,
        hit_rate_ci=rate_diff,
        mean_rating=None
        if champion.mean_rating is None or challenger.mean_rating is None
        else challenger.mean_rating - champion.mean_rating,
        mean_rating_ci=mean_diff,
    )
    return Comparison(
        k=k,
        variants=stats,
        difference=difference,
        users_in_both=len(both),
        exposures_without_user=anonymous,
        interactions_read=len(interactions),
        files=tuple(str(f) for f in files),
    )


def _wilson(successes: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    interval = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def _normal(value: float, variance: float) -> tuple[float, float]:
    half = Z95 * math.sqrt(variance)
    return value - half, value + half


def _diff(a: tuple[float, float, int] | None, b: tuple[float, float, int] | None) -> tuple[float, float] | None:
    """The normal-approximation 95% interval of b - a from each one's (estimate, variance of it, n)."""
    if a is None or b is None:
        return None
    return _normal(b[0] - a[0], a[1] + b[1])


def compare_variants(exposures: str | Path, interactions: str, k: int | None = None) -> Comparison:
    """`compare` of an exposure log (with its rotated files) and an interactions file or SQL source."""
    if not os.environ.get(KEY_ENV):
        raise ValueError(
            f"{KEY_ENV} is not set: the exposure log's users are pseudonyms under the API's key, and the "
            "interactions must be pseudonymised with the same key to be joined with them"
        )
    frame, files = read_exposures(exposures)
    users = set(frame["user"].dropna())
    since = float(frame["ts"].min()) if len(frame) else 0.0
    found = read_interactions(interactions, users, since)
    return compare(frame, found, k, files)


def format_comparison(comparison: Comparison) -> str:
    """The comparison as a text table (figures with their 95% intervals)."""
    at = f"@{comparison.k}" if comparison.k else "@all"
    lines = [
        f"{'variant':<11} {'exposures':>9} {'users':>6} {'hits':>5}  {'hit rate' + at:<26} {'mean rating':<24}",
    ]
    for stats in comparison.variants.values():
        lines.append(
            f"{stats.variant:<11} {stats.exposures:>9} {stats.users:>6} {stats.hit_users:>5}  "
            f"{_figure(stats.hit_rate, stats.hit_rate_ci):<26} "
            f"{_figure(stats.mean_rating, stats.mean_rating_ci, 2):<24}"
        )
    diff = comparison.difference
    lines.append(
        f"{'difference':<11} {'':>9} {'':>6} {'':>5}  {_figure(diff.hit_rate, diff.hit_rate_ci, signed=True):<26} "
        f"{_figure(diff.mean_rating, diff.mean_rating_ci, 2, signed=True):<24}"
    )
    lines.append(
        f"difference: challenger - champion; intervals 95% (hit rate: Wilson; means and differences: normal "
        f"approximation). Users answered by both variants, left out: {comparison.users_in_both}; exposures "
        f"without a user: {comparison.exposures_without_user}; interactions of exposed users read: "
        f"{comparison.interactions_read}."
    )
    return "\n".join(lines)


def _figure(value: float | None, ci: tuple[float, float] | None, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    sign = "+" if signed else ""
    text = f"{value:{sign}.{digits}f}"
    return f"{text} [{ci[0]:{sign}.{digits}f}, {ci[1]:{sign}.{digits}f}]" if ci is not None else text

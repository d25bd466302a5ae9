"""Batch scoring: the champion's top-k for every known user (or a list of users), written to a SQL table.

Sharded for Airflow workers (the ``recsys_batch_scoring`` DAG maps `score_shard` over shards): shard
``i`` of ``n`` holds the users whose CRC-32 of the id is ``i`` modulo ``n``, so each user is in exactly
one shard whoever lists them and in whatever order. A shard is scored in blocks of users through
`Recommender.recommend` (seen items left out, a reason per item), so at most ``block`` x items scores
exist at a time, never users x items; its rows are then written in one transaction that first deletes
the rows its users have for that model version. A rerun of a shard replaces its own rows and nothing
else; a write that fails leaves the rows that were there before, never half of them.

The table (created where missing; any SQLAlchemy URI): ``model_version, user_id, rank, item_id, score,
reason, scored_at``, primary key ``(model_version, user_id, rank)``. Readers take the rows of the
version `check_counts` last reported complete; earlier versions' rows stay until deleted.
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

__all__ = [
    "BatchTarget",
    "check_counts",
    "ensure_table",
    "recommendation_rows",
    "resolve_champion",
    "read_users",
    "score_shard",
    "shard_of",
    "shard_users",
    "write_rows",
]

DEFAULT_TABLE = "recsys_recommendations"
BLOCK_USERS = 512  # users scored at a time: a (512, n_items) float32 block, 127 MB at 62k items
WRITE_CHUNK = 5_000  # rows per INSERT batch inside the shard's transaction
DELETE_CHUNK = 500  # user ids per DELETE ... IN (...) (bound parameters stay well under every driver's limit)
COLUMNS = ("model_version", "user_id", "rank", "item_id", "score", "reason", "scored_at")
ROW_COLUMNS = ("user_id", "rank", "item_id", "score", "reason")  # what scoring yields; the rest is added on writing
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class BatchTarget:
    """Where the rows go: a SQLAlchemy URI and a table name (optionally ``schema.table``)."""

    uri: str
    table: str = DEFAULT_TABLE

    def __post_init__(self) -> None:
        if not self.uri:
            raise ValueError("batch target: uri is empty (a SQLAlchemy URI, e.g. sqlite:///recs.db)")
        parts = self.table.split(".")
        if len(parts) > 2 or not all(_NAME.match(p) for p in parts):
            raise ValueError(
                f"batch target: table {self.table!r} is not a plain SQL name ([schema.]name, letters, digits, _)"
            )

    @property
    def schema_and_name(self) -> tuple[str | None, str]:
        parts = self.table.split(".")
        return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])

    def label(self) -> str:
        """The URI with any password hidden, and the table: for logs and reports."""
        from recsys_tasks.registry.store import store_label

        return f"{store_label(self.uri)} table {self.table}"


# ---------------------------------------------------------------- shards
def shard_of(user_ids: Iterable[str], n_shards: int) -> np.ndarray:
    """(n,) int64: each user's shard, CRC-32 of its id (UTF-8) modulo ``n_shards``: stable across
    processes, machines and Python versions (unlike ``hash``)."""
    if n_shards < 1:
        raise ValueError(f"shards must be 1 or more, got {n_shards}")
    return np.fromiter((zlib.crc32(str(u).encode()) % n_shards for u in user_ids), np.int64)


def shard_users(user_ids: Sequence[str], shard: int, n_shards: int) -> list[str]:
    """The users of shard ``shard`` of ``n_shards``, in the order given."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in 0..{n_shards - 1}, got {shard}")
    ids = [str(u) for u in user_ids]
    return [ids[i] for i in np.flatnonzero(shard_of(ids, n_shards) == shard)]


# ---------------------------------------------------------------- the model
def resolve_champion(model_name: str, uri: str | None = None) -> str:
    """The version the ``champion`` alias names now; resolved once per batch so every shard scores the
    same version even if the alias moves meanwhile."""
    from recsys_tasks.registry.store import CHAMPION, ModelNotFoundError, alias_version

    version = alias_version(model_name, CHAMPION, uri)
    if version is None:
        raise ModelNotFoundError(f"no {CHAMPION} alias on registered model {model_name!r}: nothing to score")
    return version


def load_version(model_name: str, version: str, uri: str | None = None):
    """The `Recommender` of ``model_name`` version ``version`` (its meta names the version), with the items
    ingested since its training (`ingest.added`)."""
    from recsys_tasks.config import tracking_uri
    from recsys_tasks.ingest.added import apply_added_items
    from recsys_tasks.registry.store import load_recommender

    recommender = load_recommender(f"models:/{model_name}/{version}", uri=uri)
    apply_added_items(recommender, f"models:/{model_name}/{version}", uri or tracking_uri())
    return recommender


def read_users(path: str) -> list[str]:
    """User ids from a file, one per line (blank lines skipped); an empty file is an error naming it."""
    from pathlib import Path

    users = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not users:
        raise ValueError(f"{path}: no user ids (one per line)")
    return users


def known_users(recommender) -> list[str]:
    """Every user the bundle knows (has a profile of), in the bundle's order."""
    return recommender.bundle.users["user_id"].astype(str).tolist()


def recommendation_rows(recommender, users: Sequence[str], k: int, block: int = BLOCK_USERS) -> Iterator[pd.DataFrame]:
    """Per block of ``users``: their top-``k`` as rows (user_id, rank from 1, item_id, score, reason),
    seen items left out, as `Recommender.recommend` answers them."""
    if k < 1 or block < 1:
        raise ValueError(f"k and block must be 1 or more, got k={k}, block={block}")
    for start in range(0, len(users), block):
        chunk = users[start : start + block]
        responses = recommender.recommend([{"request_id": u, "user_id": u} for u in chunk], k=k)
        yield pd.DataFrame(
            [
                (r["request_id"], rank, item["item_id"], float(item["score"]), item.get("reason"))
                for r in responses
                for rank, item in enumerate(r["items"], start=1)
            ],
            columns=list(ROW_COLUMNS),
        )


# ---------------------------------------------------------------- the table
def _engine(uri: str):
    import sqlalchemy as sa

    return sa.create_engine(uri, poolclass=sa.pool.NullPool)


def table_of(target: BatchTarget):
    """The table's SQLAlchemy definition."""
    import sqlalchemy as sa

    schema, name = target.schema_and_name
    return sa.Table(
        name,
        sa.MetaData(schema=schema),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("item_id", sa.String(255), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model_version", "user_id", "rank", name=f"{name}_pk"),
    )


def ensure_table(target: BatchTarget, engine=None) -> None:
    """Create the table where it is missing; an existing table must have every column (else ValueError naming them)."""
    import sqlalchemy as sa

    engine = engine or _engine(target.uri)
    schema, name = target.schema_and_name
    inspector = sa.inspect(engine)
    if inspector.has_table(name, schema=schema):
        present = {c["name"] for c in inspector.get_columns(name, schema=schema)}
        missing = [c for c in COLUMNS if c not in present]
        if missing:
            raise ValueError(f"batch target {target.label()}: exists without column(s) {', '.join(missing)}")
        return
    table_of(target).create(engine, checkfirst=True)


def write_rows(
    target: BatchTarget,
    rows: pd.DataFrame,
    users: Sequence[str],
    model_version: str,
    scored_at: datetime | None = None,
    engine=None,
    chunk: int = WRITE_CHUNK,
) -> int:
    """Replace ``users``' rows of ``model_version`` with ``rows`` in one transaction (delete, then insert):
    committed whole or not at all. Returns the rows written."""
    import sqlalchemy as sa

    engine = engine or _engine(target.uri)
    table = table_of(target)
    at = scored_at or datetime.now(UTC)
    records = [
        {"model_version": model_version, "user_id": u, "rank": int(r), "item_id": i, "score": float(s), "reason": why}
        | {"scored_at": at}
        for u, r, i, s, why in rows[list(ROW_COLUMNS)].itertuples(index=False)
    ]
    with engine.begin() as conn:  # one transaction: an error anywhere rolls the deletes back too
        for start in range(0, len(users), DELETE_CHUNK):
            conn.execute(
                table.delete().where(
                    table.c.model_version == model_version,
                    table.c.user_id.in_(list(users[start : start + DELETE_CHUNK])),
                )
            )
        for start in range(0, len(records), chunk):
            conn.execute(sa.insert(table), records[start : start + chunk])
    return len(records)


def score_shard(
    target: BatchTarget,
    shard: int,
    n_shards: int,
    k: int,
    model_name: str,
    version: str | None = None,
    users: Sequence[str] | None = None,
    block: int = BLOCK_USERS,
    tracking: str | None = None,
    recommender=None,
) -> dict[str, Any]:
    """Score shard ``shard`` of ``n_shards`` of ``users`` (default: every user the bundle knows) with
    ``model_name`` version ``version`` (default: the champion now) and replace the shard's rows in the
    target; ``recommender``: that version already loaded. Returns a report: shard, version, users, rows,
    users with rows, seconds."""
    start = time.perf_counter()
    version = version or resolve_champion(model_name, tracking)
    rec = recommender if recommender is not None else load_version(model_name, version, tracking)
    loaded = time.perf_counter() - start
    everyone = known_users(rec)
    if users is None:
        users = everyone
    else:
        unknown = sorted(set(map(str, users)) - set(everyone))
        if unknown:
            raise ValueError(f"users: {len(unknown)} unknown to model version {version}, e.g. {unknown[:5]}")
    mine = shard_users(users, shard, n_shards)
    frames = list(recommendation_rows(rec, mine, k, block))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(ROW_COLUMNS))
    engine = _engine(target.uri)
    ensure_table(target, engine)
    written = write_rows(target, rows, mine, version, engine=engine)
    report = {
        "shard": shard,
        "shards": n_shards,
        "model_version": version,
        "users": len(mine),
        "users_with_rows": int(rows["user_id"].nunique()) if len(rows) else 0,
        "rows": written,
        "load_seconds": round(loaded, 2),
        "seconds": round(time.perf_counter() - start, 2),
    }
    log.info(
        "batch shard %d/%d of version %s: %d users, %d rows -> %s",
        shard,
        n_shards,
        version,
        len(mine),
        written,
        target.label(),
    )
    return report


def count_rows(
    target: BatchTarget, model_version: str, users: Sequence[str] | None = None, engine=None
) -> dict[str, int]:
    """Rows and distinct users ``model_version`` has in the table (only ``users``' where given)."""
    import sqlalchemy as sa

    engine = engine or _engine(target.uri)
    table = table_of(target)
    count = sa.select(sa.func.count(), sa.func.count(sa.distinct(table.c.user_id)))
    mine = table.c.model_version == model_version
    chunks = (
        [None] if users is None else [list(users[s : s + DELETE_CHUNK]) for s in range(0, len(users), DELETE_CHUNK)]
    )
    rows = distinct = 0
    with engine.connect() as conn:
        for chunk in chunks:  # users in disjoint chunks: their counts add up
            where = mine if chunk is None else sa.and_(mine, table.c.user_id.in_(chunk))
            found = conn.execute(count.where(where)).one()
            rows, distinct = rows + int(found[0]), distinct + int(found[1])
    return {"rows": rows, "users": distinct}


def check_counts(
    target: BatchTarget, reports: Sequence[dict[str, Any]], users: Sequence[str] | None = None
) -> dict[str, Any]:
    """Check the table against the shards' reports (one version, each shard once, the rows they wrote);
    ``users``: the list the shards scored (None: every known user, so the version's rows are all theirs).
    A mismatch raises RuntimeError saying what differs. Returns the totals."""
    versions = sorted({str(r["model_version"]) for r in reports})
    if len(versions) != 1:
        raise RuntimeError(f"batch scoring: shards scored different model versions {versions}")
    shards = sorted(int(r["shard"]) for r in reports)
    n_shards = int(reports[0]["shards"])
    if shards != list(range(n_shards)):
        raise RuntimeError(f"batch scoring: expected shards 0..{n_shards - 1} once each, got {shards}")
    expected = {"rows": sum(int(r["rows"]) for r in reports), "users": sum(int(r["users_with_rows"]) for r in reports)}
    found = count_rows(target, versions[0], None if users is None else sorted(set(map(str, users))))
    if found != expected:
        raise RuntimeError(
            f"batch scoring: {target.label()} holds {found} for version {versions[0]}, the shards wrote {expected}"
        )
    return {
        "model_version": versions[0],
        "shards": n_shards,
        "users": sum(int(r["users"]) for r in reports),
        **{f"table_{k}": v for k, v in found.items()},
        "seconds_max_shard": max(float(r["seconds"]) for r in reports),
        "target": target.label(),
    }

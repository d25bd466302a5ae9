"""Batch scoring (`serving.batch`) of the session's tiny bundle (12 known users, 15 items) into SQLite and
the local PostgreSQL (a table unique to each test, dropped afterwards): shards split the users exactly,
rows are what `recommend` answers, a shard rerun replaces only its rows, a write that fails (a real
database trigger) leaves the previous rows, the check notices a missing row, and the champion is
resolved from a real MLflow registry (SQLite) and its version recorded; ``recsys batch-score`` too.
"""

from __future__ import annotations

import os
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from recsys_tasks.artifacts import StageResult
from recsys_tasks.model.recommender import Recommender
from recsys_tasks.serving.batch import (
    BatchTarget,
    check_counts,
    count_rows,
    ensure_table,
    recommendation_rows,
    score_shard,
    shard_of,
    shard_users,
    write_rows,
)

PG = os.environ.get("RECSYS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
USERS = [str(u) for u in range(1, 13)]
VERSION = "7"
K = 4
MODEL_NAME = "batch-test-model"


@pytest.fixture(scope="module")
def rec(tiny_bundle: StageResult) -> Recommender:
    recommender = Recommender.load(tiny_bundle.path("bundle"))
    recommender.meta["model_version"] = VERSION
    return recommender


def _postgres_available() -> bool:
    try:
        with sa.create_engine(PG, poolclass=sa.pool.NullPool).connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError:
        return False
    return True


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BatchTarget]:
    """An empty target: a SQLite file, or a table of its own on the local PostgreSQL (dropped afterwards)."""
    name = f"recs_{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        yield BatchTarget(f"sqlite:///{tmp_path / 'batch.db'}", name)
        return
    if not _postgres_available():
        pytest.skip(f"no PostgreSQL at {PG}")
    yield BatchTarget(PG, name)
    with sa.create_engine(PG, poolclass=sa.pool.NullPool).begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name}_fail()")


def _table(target: BatchTarget) -> pd.DataFrame:
    with sa.create_engine(target.uri, poolclass=sa.pool.NullPool).connect() as conn:
        frame = pd.read_sql(sa.text(f"SELECT * FROM {target.table} ORDER BY user_id, rank"), conn)
    return frame.reset_index(drop=True)


def _score_all(target: BatchTarget, rec: Recommender, n: int) -> list[dict]:
    return [score_shard(target, i, n, K, MODEL_NAME, version=VERSION, recommender=rec) for i in range(n)]


# ---------------------------------------------------------------- shards
def test_shards_are_the_crc32_of_the_user_id() -> None:
    """Known answer: CRC-32 of "1" is 0x83DCEFB7 = 2212294583, so shard 2 of 3 and 3 of 4."""
    assert zlib.crc32(b"1") == 2212294583
    assert shard_of(["1"], 3).tolist() == [2] and shard_of(["1"], 4).tolist() == [3]
    assert shard_of(USERS, 3).tolist() == [2, 1, 1, 1, 1, 1, 0, 2, 0, 0, 0, 0]


@pytest.mark.parametrize("n", [1, 3, 5, 16])
def test_the_union_of_the_shards_is_every_user_exactly_once(n: int) -> None:
    shards = [shard_users(USERS, i, n) for i in range(n)]
    together = [u for shard in shards for u in shard]
    assert sorted(together) == sorted(USERS) and len(together) == len(set(together))
    assert [shard_users(list(reversed(USERS)), i, n) for i in range(n)] == [s[::-1] for s in shards]  # any order


def test_bad_shard_numbers_and_table_names_are_refused() -> None:
    with pytest.raises(ValueError, match="shards must be 1 or more"):
        shard_of(USERS, 0)
    with pytest.raises(ValueError, match=r"shard must be in 0\.\.2"):
        shard_users(USERS, 3, 3)
    with pytest.raises(ValueError, match="table 'recs; DROP TABLE x'"):
        BatchTarget("sqlite://", "recs; DROP TABLE x")
    with pytest.raises(ValueError, match="uri is empty"):
        BatchTarget("", "recs")


# ---------------------------------------------------------------- rows
@pytest.mark.slow
def test_rows_are_what_recommend_answers_in_blocks(rec: Recommender) -> None:
    """Blocks of 5 users give the rows one request per user gives: ranks 1..k, no seen item."""
    rows = pd.concat(list(recommendation_rows(rec, USERS, K, block=5)), ignore_index=True)
    assert len(rows) == len(USERS) * K
    for user, group in rows.groupby("user_id"):
        answer = rec.recommend([{"request_id": user, "user_id": user}], k=K)[0]["items"]
        assert group["item_id"].tolist() == [i["item_id"] for i in answer]
        assert group["rank"].tolist() == list(range(1, K + 1))
        assert group["score"].tolist() == [i["score"] for i in answer]
        assert group["reason"].tolist() == [i["reason"] for i in answer]
        seen = {h[0] for h in rec.query_for({"request_id": "x", "user_id": user}).history}
        assert not seen & set(group["item_id"])


# ---------------------------------------------------------------- the table
@pytest.mark.slow
def test_every_shard_written_then_checked(target: BatchTarget, rec: Recommender) -> None:
    reports = _score_all(target, rec, 3)
    assert [r["users"] for r in reports] == [5, 5, 2]  # shard_of(USERS, 3) above
    table = _table(target)
    assert sorted(table["user_id"].unique()) == sorted(USERS) and len(table) == len(USERS) * K
    assert set(table["model_version"]) == {VERSION}
    summary = check_counts(target, reports)
    assert (summary["table_rows"], summary["table_users"], summary["users"]) == (len(USERS) * K, 12, 12)


@pytest.mark.slow
def test_a_shard_rerun_replaces_only_its_own_rows(target: BatchTarget, rec: Recommender) -> None:
    reports = _score_all(target, rec, 3)
    before = _table(target)
    mine = shard_users(USERS, 1, 3)
    later = datetime(2030, 1, 1, tzinfo=UTC)
    rows = pd.concat(list(recommendation_rows(rec, mine, K)), ignore_index=True)
    assert write_rows(target, rows, mine, VERSION, scored_at=later) == len(mine) * K
    after = _table(target)
    stamped = pd.to_datetime(after["scored_at"], utc=True) == later
    assert set(after.loc[stamped, "user_id"]) == set(mine)  # its rows replaced ...
    keep = ~after["user_id"].isin(mine)
    pd.testing.assert_frame_equal(
        after[keep].reset_index(drop=True), before[~before["user_id"].isin(mine)].reset_index(drop=True)
    )
    cols = ["user_id", "rank", "item_id", "score"]
    pd.testing.assert_frame_equal(after[cols], before[cols])  # ... by the same recommendations, nothing doubled
    check_counts(target, reports)


@pytest.mark.slow
def test_another_version_keeps_its_own_rows(target: BatchTarget, rec: Recommender) -> None:
    _score_all(target, rec, 2)
    rows = pd.concat(list(recommendation_rows(rec, USERS[:3], K)), ignore_index=True)
    write_rows(target, rows, USERS[:3], "8")
    assert count_rows(target, VERSION) == {"rows": len(USERS) * K, "users": 12}
    assert count_rows(target, "8") == {"rows": 3 * K, "users": 3}
    assert count_rows(target, VERSION, USERS[:5]) == {"rows": 5 * K, "users": 5}


def _fail_inserts_of_rank(target: BatchTarget, rank: int) -> None:
    """A real database trigger that aborts any insert of a row of ``rank``."""
    name = target.table
    with sa.create_engine(target.uri, poolclass=sa.pool.NullPool).begin() as conn:
        if target.uri.startswith("sqlite"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name}_fail BEFORE INSERT ON {name} WHEN NEW.rank = {rank} "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )
        else:
            conn.exec_driver_sql(
                f"CREATE FUNCTION {name}_fail() RETURNS trigger AS $$ BEGIN IF NEW.rank = {rank} THEN "
                "RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name}_fail BEFORE INSERT ON {name} FOR EACH ROW EXECUTE FUNCTION {name}_fail()"
            )


@pytest.mark.slow
def test_a_failing_write_leaves_the_previous_rows(target: BatchTarget, rec: Recommender) -> None:
    """The rerun deletes the shard's rows and inserts some (chunks of 2 rows) before the trigger aborts
    it at the first rank-3 row: the transaction rolls all of it back."""
    _score_all(target, rec, 3)
    before = _table(target)
    _fail_inserts_of_rank(target, 3)
    mine = shard_users(USERS, 0, 3)
    rows = pd.concat(list(recommendation_rows(rec, mine, K)), ignore_index=True)
    with pytest.raises(sa.exc.DBAPIError, match="injected failure"):
        write_rows(target, rows, mine, VERSION, scored_at=datetime(2030, 1, 1, tzinfo=UTC), chunk=2)
    pd.testing.assert_frame_equal(_table(target), before)


@pytest.mark.slow
def test_the_check_notices_a_missing_row(target: BatchTarget, rec: Recommender) -> None:
    reports = _score_all(target, rec, 2)
    with sa.create_engine(target.uri, poolclass=sa.pool.NullPool).begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM {target.table} WHERE user_id = '3' AND rank = 2")
    with pytest.raises(RuntimeError, match="the shards wrote"):
        check_counts(target, reports)
    with pytest.raises(RuntimeError, match=r"expected shards 0\.\.1 once each"):
        check_counts(target, reports[:1] + reports[:1])


def test_an_existing_table_without_the_columns_is_named(tmp_path: Path) -> None:
    target = BatchTarget(f"sqlite:///{tmp_path / 'other.db'}", "recs")
    with sa.create_engine(target.uri).begin() as conn:
        conn.exec_driver_sql("CREATE TABLE recs (user_id TEXT, item_id TEXT)")
    with pytest.raises(ValueError, match="recs: exists without column.*model_version, rank, score"):
        ensure_table(target)


@pytest.mark.slow
def test_unknown_users_are_named(rec: Recommender, tmp_path: Path) -> None:
    target = BatchTarget(f"sqlite:///{tmp_path / 'b.db'}", "recs")
    with pytest.raises(ValueError, match=r"users: 1 unknown to model version 7, e.g. \['nobody'\]"):
        score_shard(target, 0, 1, K, MODEL_NAME, version=VERSION, users=["1", "nobody"], recommender=rec)
    assert not sa.inspect(sa.create_engine(target.uri)).has_table("recs")  # nothing written


# ---------------------------------------------------------------- the registry's champion
@dataclass(frozen=True)
class Registry:
    uri: str
    name: str
    version: str


def register_champion(bundle: StageResult, root: Path, name: str = MODEL_NAME) -> Registry:
    """The tiny bundle registered as ``name`` in a SQLite MLflow store under ``root``, alias champion."""
    import mlflow
    from mlflow import MlflowClient

    from recsys_tasks.registry.register import _log_model

    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("batch", artifact_location=(root / "mlartifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        version = _log_model(name, bundle, run.info.run_id)
    client.set_registered_model_alias(name, "champion", version)
    return Registry(uri, name, str(version))


@pytest.fixture(scope="module")
def registry(tiny_bundle: StageResult, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return register_champion(tiny_bundle, tmp_path_factory.mktemp("batch-registry"))


@pytest.mark.slow
def test_the_champion_is_resolved_from_the_registry_and_its_version_recorded(
    registry: Registry, tmp_path: Path
) -> None:
    target = BatchTarget(f"sqlite:///{tmp_path / 'b.db'}", "recs")
    report = score_shard(target, 0, 1, K, registry.name, tracking=registry.uri)
    assert report["model_version"] == registry.version == "1"
    table = _table(target)
    assert set(table["model_version"]) == {"1"} and len(table) == len(USERS) * K


@pytest.mark.slow
def test_the_cli_scores_a_shard_of_a_list_of_users(registry: Registry, tmp_path: Path, capsys) -> None:
    import json

    from recsys_tasks.cli import main

    users = tmp_path / "users.txt"
    users.write_text("1\n2\n3\n7\n")
    target = f"sqlite:///{tmp_path / 'cli.db'}"
    args = ["batch-score", "--target", target, "--table", "recs", "--k", "3", "--model-name", registry.name]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", registry.uri)
        codes = [main([*args, "--users", str(users), "--shards", "2", "--shard", str(i)]) for i in range(2)]
    assert codes == [0, 0]
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert sorted(r["shard"] for r in reports) == [0, 1] and sum(r["users"] for r in reports) == 4
    table = _table(BatchTarget(target, "recs"))
    assert sorted(table["user_id"].unique()) == ["1", "2", "3", "7"] and set(table["rank"]) == {1, 2, 3}

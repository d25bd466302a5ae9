"""
### Batch scoring: the champion's top-k for every user, into the platform's SQL table

1. **plan** resolves the `champion` alias of the registered model to a version (once, so every shard
   scores the same version even if a promotion lands meanwhile), creates the target table where it
   is missing and lists the shards;
2. **score** is mapped over the shards (dynamic task mapping): each loads that model version, scores
   its users (a stable hash of the user id picks the shard) in blocks with top-k, seen items left
   out, a reason per item, and replaces its users' rows of that version in one transaction: a rerun
   replaces only its own rows, a failure leaves the previous ones;
3. **check** compares the table's rows and users of the version with what the shards wrote, and
   reports the totals.

Rows: `model_version, user_id, rank, item_id, score, reason, scored_at` (`recsys_tasks.serving.batch`).
Target: `sql:<Airflow connection id>`, a SQLAlchemy URI, or empty for `RECSYS_BATCH_URI` (default:
SQLite at `$RECSYS_WORKDIR/batch.db`). Schedule: `RECSYS_BATCH_SCHEDULE` (a cron expression or
preset; `champion` to run on every event of the `recsys_champion` asset); none by default.
`docs/operations.md` ("Batch scoring") has the details.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from recsys_tasks.orchestration import champion_asset, connection_uri, new_items_asset

SCORING_QUEUE = os.environ.get("RECSYS_BATCH_QUEUE", "default")
# The champion of the registered model changed: the cold-start DAG's promotion would emit it (an outlet of
# its `register` task), and this DAG runs on it where RECSYS_BATCH_SCHEDULE is "champion"; so it does when the
# new-items DAG changed the champion's added items (dags/recsys_new_items.py): either event starts a run.
CHAMPION_ASSET = champion_asset()
NEW_ITEMS_ASSET = new_items_asset()


def _schedule():
    """None unless RECSYS_BATCH_SCHEDULE names one: unpausing never starts an unrequested run."""
    value = os.environ.get("RECSYS_BATCH_SCHEDULE") or None
    return (CHAMPION_ASSET | NEW_ITEMS_ASSET) if value == "champion" else value


def _target(params: dict):
    """The `BatchTarget` of the run's params; ``sql:<conn id>`` is resolved here, inside the task, so
    credentials never reach XCom or the logs."""
    from recsys_tasks.config import workdir
    from recsys_tasks.serving.batch import BatchTarget

    target = params.get("target") or os.environ.get("RECSYS_BATCH_URI") or f"sqlite:///{workdir() / 'batch.db'}"
    if target.startswith("sql:"):
        target = connection_uri(target[len("sql:") :])
    return BatchTarget(target, params.get("table") or "recsys_recommendations")


def _tracking() -> str:
    from recsys_tasks.config import tracking_uri

    return tracking_uri()


@dag(
    dag_id="recsys_batch_scoring",
    schedule=_schedule(),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["recsys", "batch", "mlflow"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "owner": "ml-platform"},
    params={
        "model_name": Param(
            "recsys-cold-start",
            type="string",
            title="Registered model name",
            description="MLflow registered model whose 'champion' version is scored.",
        ),
        "target": Param(
            None,
            type=["null", "string"],
            title="Target database",
            description="'sql:<Airflow connection id>' or a SQLAlchemy URI; empty: RECSYS_BATCH_URI, "
            "else SQLite at $RECSYS_WORKDIR/batch.db.",
        ),
        "table": Param(
            "recsys_recommendations",
            type="string",
            pattern=r"^([A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*$",
            title="Table",
            description="Table the rows go to ([schema.]name), created where missing.",
        ),
        "k": Param(20, type="integer", minimum=1, maximum=1000, title="Items per user", description="Top-k per user."),
        "shards": Param(
            4,
            type="integer",
            minimum=1,
            maximum=1024,
            title="Shards",
            description="Mapped scoring tasks; each holds the users whose id hashes to it.",
        ),
        "users": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            title="Users",
            description="Only these user ids, one per line; empty: every user the model knows.",
        ),
    },
)
def recsys_batch_scoring():
    jobs = plan()
    reports = score.expand(job=jobs)
    check(reports)


@task
def plan() -> list[dict]:
    """The champion's version, the table created, one job per shard."""
    from recsys_tasks.serving.batch import ensure_table, resolve_champion

    params = get_current_context()["params"]
    version = resolve_champion(params["model_name"], _tracking())
    ensure_table(_target(params))
    n = int(params["shards"])
    return [{"shard": i, "shards": n, "version": version} for i in range(n)]


@task(queue=SCORING_QUEUE, map_index_template="shard {{ shard_label }}")
def score(job: dict) -> dict:
    """Score one shard and replace its rows (`serving.batch.score_shard`)."""
    from recsys_tasks.serving.batch import score_shard

    context = get_current_context()
    context["shard_label"] = f"{job['shard']}/{job['shards']}"  # type: ignore[typeddict-unknown-key]
    params = context["params"]
    return score_shard(
        _target(params),
        int(job["shard"]),
        int(job["shards"]),
        int(params["k"]),
        params["model_name"],
        version=str(job["version"]),
        users=params.get("users") or None,
        tracking=_tracking(),
    )


@task
def check(reports: list[dict]) -> dict:
    """The table holds exactly what the shards wrote for the version; the totals."""
    from recsys_tasks.serving.batch import check_counts

    params = get_current_context()["params"]
    summary = check_counts(_target(params), list(reports), params.get("users") or None)
    print(f"batch scoring: {summary}")
    return summary


dag_object = recsys_batch_scoring()


if __name__ == "__main__":
    dag_object.test()

"""
### New items between retrains: the source's new items made recommendable by the champion

**ingest** (`recsys_tasks.ingest.new_items.ingest_new_items`) reads the source's items (files or SQL),
validates them as extract does, and takes those the champion's training catalog lacks: each is
checked by POST /items' schema, its text encoded by the champion's text model, its KG part taken
from the trained item linked to its entity (else zeros), exactly as `POST /items` does. The set is
logged as an MLflow run's artefact, then named by a tag on the champion's model version: serving
(on its next poll) and batch scoring apply it whenever they load that version; no retraining.

Idempotent (a rerun with nothing new writes nothing and skips, so emits no Asset event), atomic (the
tag moves only once the artefact is complete), bounded (`max_items` new or changed items per run).
When it changed the set, the task emits the `recsys_new_items` Asset (extra: version, run, counts).
Schedule: `RECSYS_NEW_ITEMS_SCHEDULE` (a cron expression or preset; `champion` to run on every event
of the `recsys_champion` asset); none by default. `docs/operations.md` ("New items between retrains").
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from recsys_tasks.orchestration import champion_asset, connection_uri, new_items_asset

NEW_ITEMS_ASSET = new_items_asset()


def _schedule():
    """None unless RECSYS_NEW_ITEMS_SCHEDULE names one: unpausing never starts an unrequested run."""
    value = os.environ.get("RECSYS_NEW_ITEMS_SCHEDULE") or None
    return [champion_asset()] if value == "champion" else value


@dag(
    dag_id="recsys_new_items",
    schedule=_schedule(),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # one writer of a version's set at a time
    doc_md=__doc__,
    tags=["recsys", "new-items", "mlflow"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "owner": "ml-platform"},
    params={
        "model_name": Param(
            "recsys-cold-start",
            type="string",
            title="Registered model name",
            description="MLflow registered model whose 'champion' version gets the new items.",
        ),
        "source": Param(
            None,
            type=["null", "string"],
            title="Data source",
            description="Where the items are read: 'sql:<Airflow connection id>', a SQLAlchemy URI, a "
            "RecBole or CSV directory, or 'bundled'; empty: the pipeline config's extract.source.",
        ),
        "max_items": Param(
            10_000,
            type="integer",
            minimum=1,
            maximum=1_000_000,
            title="Max items per run",
            description="New or changed items one run may encode; more is refused (retrain instead).",
        ),
    },
)
def recsys_new_items():
    ingest()


@task(outlets=[NEW_ITEMS_ASSET])
def ingest() -> dict:
    """Record the source's new items on the champion's version; skipped (no Asset event) when nothing changed."""
    from airflow.sdk.exceptions import AirflowSkipException

    from recsys_tasks.config import PipelineConfig
    from recsys_tasks.ingest.new_items import ingest_new_items

    context = get_current_context()
    params = context["params"]
    cfg = PipelineConfig()
    source = params.get("source") or cfg.extract.source
    if source.startswith("sql:"):  # resolved here, inside the task: credentials never reach XCom or the logs
        source = connection_uri(source[len("sql:") :])
    report = ingest_new_items(cfg, source=source, model_name=params["model_name"], max_items=int(params["max_items"]))
    print(
        f"new items: {report['model_name']} version {report['model_version']}: {len(report['added'])} added, "
        f"{len(report['updated'])} updated, {len(report['dropped'])} dropped, {report['n_items']} in all"
    )
    if not report["changed"]:
        raise AirflowSkipException(f"nothing new in {report['source']} for version {report['model_version']}")
    context["outlet_events"][NEW_ITEMS_ASSET].extra = {
        "model_name": report["model_name"],
        "model_version": report["model_version"],
        "run_id": report["run_id"],
        "n_items": report["n_items"],
        "n_added": len(report["added"]),
    }
    return {k: report[k] for k in ("model_name", "model_version", "run_id", "n_items", "added", "updated", "dropped")}


dag_object = recsys_new_items()


if __name__ == "__main__":
    dag_object.test()

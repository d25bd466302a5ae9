"""
### Drift check: retrain when the source has drifted from the latest snapshot

1. **measure** reads and validates the data source as `extract` would (nothing is written) and measures its
   drift against the latest snapshot of the same source under `$RECSYS_WORKDIR/runs`: the share of
   interactions by new users, the share on new items, the interaction volume ratio and the rating
   distribution's total variation distance (`recsys_tasks.data.drift`);
2. **retrain_needed** passes when the largest of the two shares and the rating distance is above the
   threshold (`monitor.drift_threshold`, 0.2 by default; the form can set another), and skips the rest
   otherwise; no earlier snapshot (a first run) never passes;
3. **trigger_retrain** triggers `recsys_cold_start` on the same source and user sample.

Schedule: `RECSYS_DRIFT_SCHEDULE` (a cron expression or preset); none by default, so unpausing never starts
an unrequested run. `docs/operations.md` ("Monitoring and drift") has the details.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, get_current_context, task

from recsys_tasks.orchestration import connection_uri


@dag(
    dag_id="recsys_drift_check",
    # None unless RECSYS_DRIFT_SCHEDULE names one: unpausing never starts an unrequested run
    schedule=os.environ.get("RECSYS_DRIFT_SCHEDULE") or None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["recsys", "monitoring", "drift"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "owner": "ml-platform"},
    render_template_as_native_obj=True,  # the trigger's conf keeps the params' types (sample_users an integer)
    params={
        "source": Param(
            "bundled",
            type="string",
            title="Data source",
            description="As recsys_cold_start's: 'bundled', a RecBole or CSV directory, "
            "'sql:<Airflow connection id>', a SQLAlchemy URI, or 'sql' for RECSYS_SOURCE_URI.",
        ),
        "sample_users": Param(
            0,
            type="integer",
            minimum=0,
            title="Sample users",
            description="As recsys_cold_start's: 0 = all users; compared with snapshots of the same sample.",
        ),
        "drift_threshold": Param(
            None,
            type=["null", "number"],
            minimum=0,
            maximum=1,
            title="Drift threshold",
            description="Retrain when the largest of the new-user share, the new-item share and the rating "
            "distance passes this; empty: monitor.drift_threshold (0.2).",
        ),
    },
)
def recsys_drift_check():
    retrain_needed(measure()) >> TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id="recsys_cold_start",
        conf={"source": "{{ params.source }}", "sample_users": "{{ params.sample_users }}"},
    )


@task
def measure() -> dict:
    """The source's drift against the latest snapshot and the decision (`data.drift.check_source`)."""
    import dataclasses

    from recsys_tasks.config import workdir
    from recsys_tasks.data.drift import check_source
    from recsys_tasks.pipeline import config_from_params

    params = get_current_context()["params"]
    cfg = config_from_params({"source": params["source"], "sample_users": params["sample_users"]})
    if params.get("drift_threshold") is not None:
        cfg = cfg.with_overrides({"monitor.drift_threshold": params["drift_threshold"]})
    extract = cfg.extract
    if extract.source.startswith("sql:"):  # resolved here, inside the task: credentials never reach XCom
        extract = dataclasses.replace(extract, source=connection_uri(extract.source[len("sql:") :]))
    return check_source(extract, cfg.monitor, workdir() / "runs")


@task.short_circuit
def retrain_needed(summary: dict) -> bool:
    """Passes on to the trigger only when the drift passed the threshold; says why either way."""
    print(f"drift check: {summary['reason']}")
    return bool(summary["retrain"])


dag_object = recsys_drift_check()


if __name__ == "__main__":
    dag_object.test()

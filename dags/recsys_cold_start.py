"""
### Cold-start recommender: KG + text embeddings, fine-tuned hybrid, MLflow champion

Weekly (and on demand from the trigger form) this DAG

1. **extract**s interactions, users, items and the knowledge graph from the data source
   (the bundled MovieLens-100K by default; a RecBole atomic-file or CSV directory, or a database:
   `sql:<Airflow connection id>`, a SQLAlchemy URI, or `sql` for `RECSYS_SOURCE_URI`), validates
   them, snapshots them to Parquet and builds the cold-start split (incrementally from a previous
   snapshot when one is given);
2. **kg_embed**s a graph of the triples, item attributes, user demographics and training likes
   with PyKEEN, and in parallel **text_embed**s item and profile text with a BERT-family encoder
   (queue `gpu`); with `text.shards` above 1 (an override), **plan_text_shards** lists the shards and
   **encode_text_shard** is mapped over them (queue `gpu`), each encoding its share of the texts into
   the vector cache, so text_embed only assembles (with 1 shard the mapped task is skipped);
3. **finetune**s the hybrid two-tower model on the interactions (queue `gpu`);
4. **evaluate**s it on every slice of the cold-start protocol against baselines fit in the same run;
5. **register**s the model in MLflow and moves the `champion` alias only when the candidate
   beats the champion on the same data (otherwise it becomes `challenger`).

Tasks pass paths and ids through XCom, never data. Artifacts live under
`$RECSYS_WORKDIR/runs/<run id>/<stage>`; MLflow uses `MLFLOW_TRACKING_URI`
(default: SQLite in the workdir). `python dags/recsys_cold_start.py` runs `dag.test()`.

**Where to look**: this DAG's **Model report** tab (the `recsys` plugin) shows the champion and
the challenger with their scores per cold-start slice against the baselines, and **Browse → MLflow
model** opens the registered model in the MLflow UI. Every parameter and config key, the serving API
and the environment: `docs/operations.md` in the repository; the stage graph and the packages:
`docs/architecture.md`.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from recsys_tasks.orchestration import champion_asset, connection_uri
from recsys_tasks.stages import STAGES

GPU_QUEUE = os.environ.get("RECSYS_GPU_QUEUE", "gpu")


def _setup() -> tuple:
    """The run's config and directory (imports stay inside tasks: nothing heavy at parse time)."""
    from recsys_tasks.pipeline import config_from_params, run_dir

    context = get_current_context()
    return config_from_params(context["params"]), run_dir(context["run_id"])


def _resolve_source(extract_cfg):
    """``sql:<conn id>`` names an Airflow connection: its SQLAlchemy URI is used for this call only,
    so the resolved config written to disk and MLflow keeps the id, never the credentials."""
    if not extract_cfg.source.startswith("sql:"):
        return extract_cfg
    return dataclasses.replace(extract_cfg, source=connection_uri(extract_cfg.source[len("sql:") :]))


@dag(
    dag_id="recsys_cold_start",
    # None unless RECSYS_SCHEDULE names one (e.g. "@weekly"): unpausing never starts an unrequested run
    schedule=os.environ.get("RECSYS_SCHEDULE") or None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["recsys", "cold-start", "mlflow"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "owner": "ml-platform"},
    params={
        "source": Param(
            "bundled",
            type="string",
            title="Data source",
            description="'bundled' (MovieLens-100K + Freebase KG), a path to a RecBole "
            "atomic-file directory or a CSV directory, or a database: "
            "'sql:<Airflow connection id>', a SQLAlchemy URI, or 'sql' for the "
            "URI in RECSYS_SOURCE_URI (tables users, items, interactions; "
            "kg, links optional).",
        ),
        "previous_snapshot": Param(
            None,
            type=["null", "string"],
            title="Previous snapshot (SQL)",
            description="Incremental extraction from a database: an earlier run's "
            "extract directory; only newer interactions are read and "
            "merged with it. Empty: read everything.",
        ),
        "holdout": Param(
            True,
            type="boolean",
            title="Hold out test slices",
            description="Off: train on every interaction, skip evaluation, and promote only "
            "if there is no champion yet.",
        ),
        "seed": Param(
            42,
            type="integer",
            minimum=0,
            title="Split seed",
            description="Seed of the cold-user / cold-item split (and of the models).",
        ),
        "sample_users": Param(
            0,
            type="integer",
            minimum=0,
            title="Sample users",
            description="0 = all users; otherwise a seeded sample of this many users.",
        ),
        "kg_model": Param(
            "DistMult",
            type="string",
            title="KG model",
            enum=["DistMult", "ComplEx", "TransE", "RotatE", "TransH", "ConvE"],
            description="PyKEEN model, chosen by name.",
        ),
        "kg_epochs": Param(
            20,
            type="integer",
            minimum=1,
            title="KG epochs",
            description="Upper bound; early stopping on a validation split may stop sooner.",
        ),
        "kg_dim": Param(
            64,
            type="integer",
            minimum=2,
            title="KG embedding dimension",
            description="Size of the entity and relation vectors PyKEEN learns.",
        ),
        "text_model": Param(
            "sentence-transformers/all-MiniLM-L6-v2",
            type="string",
            title="Text model",
            description="Hugging Face encoder: the packaged all-MiniLM-L6-v2 by default, "
            "or any local folder / hub name.",
        ),
        "finetune_epochs": Param(
            40,
            type="integer",
            minimum=1,
            title="Fine-tune epochs",
            description="Upper bound; early stopping on pseudo-cold validation users.",
        ),
        "promotion_margin": Param(
            0.0,
            type="number",
            minimum=0,
            title="Promotion margin",
            description="The candidate's mean cold-slice NDCG@20 must beat the champion's by more than this.",
        ),
        "model_name": Param(
            "recsys-cold-start",
            type="string",
            title="Registered model name",
            description="MLflow registered model that receives the new version and its "
            "'champion' or 'challenger' alias.",
        ),
        "overrides": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            title="Config overrides",
            description="Any other config key as key=value, one per line, e.g. "
            "finetune.dim=128 (the keys of recsys_tasks/config.py).",
        ),
    },
)
def recsys_cold_start():
    tasks: dict = {}
    for stage in STAGES:  # recsys_tasks.stages declares the graph; each task is one stage
        tasks[stage.name] = _stage_task(stage)(upstream={name: tasks[name] for name in stage.needs})
    _encode_text_shard.expand(job=_plan_text_shards(tasks["extract"])) >> tasks["text_embed"]
    _announce_champion(tasks["register"])


@task(task_id="plan_text_shards")
def _plan_text_shards(extract: dict) -> list[dict]:
    """One job per shard of the snapshot's texts (``text.shards``); none for 1 shard: text_embed encodes alone."""
    from recsys_tasks.text.shards import shard_jobs

    cfg, _ = _setup()
    return shard_jobs(extract["out_dir"], cfg.text.shards)


@task(task_id="encode_text_shard", queue=GPU_QUEUE, map_index_template="shard {{ shard_label }}")
def _encode_text_shard(job: dict) -> dict:
    """Encode one shard of the texts the vector cache lacks into it (`text.shards.encode_shard`)."""
    from recsys_tasks.stages import RunContext, text_config
    from recsys_tasks.text.shards import encode_shard

    context = get_current_context()
    context["shard_label"] = f"{job['shard']}/{job['shards']}"  # the map index's label in the UI
    cfg, base = _setup()
    ctx = RunContext(cfg, context["run_id"], base)  # text_embed's cache: `stages.text_config`
    return encode_shard(text_config(ctx), job["snapshot"], int(job["shard"]), int(job["shards"]))


@task(task_id="announce_champion", outlets=[champion_asset()])
def _announce_champion(summary: dict) -> str:
    """Emits the champion Asset (the batch-scoring DAG can run on it) only when register promoted the
    candidate: a skipped task emits no Asset event."""
    from airflow.sdk.exceptions import AirflowSkipException

    if not summary.get("promoted"):
        raise AirflowSkipException(f"not promoted: {summary.get('reason', 'no decision')}")
    return str(summary.get("model_version", ""))


def _stage_task(stage):
    """A task that runs ``stage`` on the upstream results it is handed (XCom dicts: paths, ids, metrics)."""

    # text_embed also waits for the encoding shards, and runs when there are none (1 shard: skipped)
    after_shards = {"trigger_rule": "none_failed"} if stage.name == "text_embed" else {}

    @task(task_id=stage.name, doc_md=stage.doc, **({"queue": GPU_QUEUE} if stage.gpu else {}), **after_shards)
    def run(upstream: dict) -> dict:
        from recsys_tasks.artifacts import StageResult
        from recsys_tasks.pipeline import write_resolved_config
        from recsys_tasks.stages import RunContext, run_stage

        cfg, base = _setup()
        run_id = get_current_context()["run_id"]
        inputs = {name: StageResult.from_dict(result) for name, result in upstream.items()}
        if stage.name == "extract":  # validated first: bad data leaves no run directory
            resolved = dataclasses.replace(cfg, extract=_resolve_source(cfg.extract))
            result = run_stage(stage, RunContext(resolved, run_id, base), inputs)
            write_resolved_config(cfg, base)  # the connection id, never its credentials
        else:
            result = run_stage(stage, RunContext(cfg, run_id, base), inputs)
        _progress(stage, result)
        if stage.name != "register":
            return result.to_dict()
        from recsys_tasks.pipeline import summarize

        seconds = {name: r.info.get("seconds") for name, r in inputs.items()} | {"register": result.info["seconds"]}
        summary = summarize(run_id, base, inputs, result.info, seconds)
        return {k: v for k, v in summary.items() if k not in ("table", "metrics")}

    return run


dag_object = recsys_cold_start()


def _progress(stage, result) -> None:
    """One line per finished stage on the terminal `make run` started from (``RECSYS_PROGRESS_FD``)."""
    fd = os.environ.get("RECSYS_PROGRESS_FD")
    if fd:
        from recsys_tasks.stages import progress_line

        os.write(int(fd), (progress_line(stage, result) + "\n").encode())


def _test_quietly() -> int:
    """``dag.test()`` with Airflow's own output in a log file: the terminal gets a line per stage and the table."""
    import json
    import sys
    from pathlib import Path

    from recsys_tasks.pipeline import run_dir

    log_path = Path(os.environ.get("AIRFLOW_HOME", ".airflow")).resolve() / "logs" / "dag-test.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    terminal, errors = os.dup(1), os.dup(2)
    os.set_inheritable(terminal, True)
    os.environ["RECSYS_PROGRESS_FD"] = str(terminal)
    os.write(terminal, f"Airflow's own logs: {log_path}\n".encode())
    with open(log_path, "w") as log:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        try:
            run = dag_object.test()
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(terminal, 1), os.dup2(errors, 2)
    summary_path = run_dir(run.run_id) / "summary.json"
    if run.state != "success" or not summary_path.exists():
        print(
            f"DAG run {run.run_id} ended in state {run.state}; the failing task's error is in {log_path}",
            file=sys.stderr,
        )
        return 1
    summary = json.loads(summary_path.read_text())
    print()
    print(summary.get("table") or "(no evaluation: trained without holdout)")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("table", "metrics")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(_test_quietly())

"""The whole workflow in-process (``recsys run``), and the glue both it and the DAG share:
run ids and directories, and the mapping from the trigger form's params to `PipelineConfig`.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from recsys_tasks.artifacts import StageResult, write_json
from recsys_tasks.config import PipelineConfig, tracking_uri, workdir

log = logging.getLogger(__name__)

# Trigger-form params (DAG) -> config keys. Anything else goes through "overrides".
PARAM_KEYS = {
    "source": "extract.source",
    "seed": "extract.seed",
    "sample_users": "extract.sample_users",
    "previous_snapshot": "extract.previous_snapshot",
    "kg_model": "kg.model",
    "kg_epochs": "kg.epochs",
    "kg_dim": "kg.embedding_dim",
    "text_model": "text.model",
    "finetune_epochs": "finetune.epochs",
    "promotion_margin": "registry.margin",
    "model_name": "registry.model_name",
}


def config_from_params(params: Mapping[str, Any] | None) -> PipelineConfig:
    """A config from Airflow params: named fields, ``holdout``, then ``overrides`` (["k=v", ...])."""
    params = dict(params or {})
    values = {PARAM_KEYS[k]: v for k, v in params.items() if k in PARAM_KEYS and v not in (None, "")}
    cfg = PipelineConfig().with_overrides(values)
    if params.get("holdout") is False:
        cfg = cfg.with_overrides(NO_HOLDOUT)
    return cfg.with_overrides(list(params.get("overrides") or []))


NO_HOLDOUT = {"extract.cold_user_frac": 0.0, "extract.cold_item_frac": 0.0, "extract.warm_test_frac": 0.0}


def run_dir(run_id: str, root: Path | None = None) -> Path:
    """``<workdir>/runs/<run id made safe for a path>``; each stage writes only its own subfolder."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_")
    return (root or workdir()) / "runs" / safe


def write_resolved_config(cfg: PipelineConfig, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path


def new_run_id(prefix: str = "cli") -> str:
    """``<prefix>_<UTC time>_<random>``: two runs started in the same second never share a directory."""
    return f"{prefix}_{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}_{uuid.uuid4().hex[:8]}"


def run_pipeline(cfg: PipelineConfig, root: Path | None = None, run_id: str | None = None) -> dict[str, Any]:
    """Every stage of `stages.STAGES` in order, in-process; a JSON-able summary.

    The MLflow store is read first (the model's champion): a locked or unreachable store raises
    `StoreError` before any stage runs, not after the training.
    """
    from recsys_tasks.registry.store import alias_version
    from recsys_tasks.stages import STAGES, RunContext, run_stage

    run_id = run_id or new_run_id()
    ctx = RunContext(cfg, run_id, run_dir(run_id, root), tracking_uri(root))  # root's store, not the CWD's
    alias_version(cfg.registry.model_name, uri=ctx.tracking_uri)  # the register stage's first read
    results: dict[str, StageResult] = {}
    for stage in STAGES:
        results[stage.name] = run_stage(stage, ctx, results)
        if stage.name == "extract":  # validated first: bad data writes no run directory
            write_resolved_config(cfg, ctx.run_dir)
    registered = results.pop("register")
    return summarize(
        run_id,
        ctx.run_dir,
        results,
        registered.info,
        {name: r.info["seconds"] for name, r in {**results, "register": registered}.items()},
    )


def summarize(
    run_id: str,
    base: Path,
    results: Mapping[str, StageResult],
    registered: Mapping[str, Any],
    seconds: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The run's summary, also written to ``<run dir>/summary.json``."""
    evaluation = results["evaluate"]
    summary = {
        "run_id": run_id,
        "run_dir": str(base),
        **registered,
        "metrics": evaluation.metrics,
        "table": evaluation.info.get("table"),
        "stage_seconds": dict(seconds or {}),
    }
    write_json(base / "summary.json", summary)
    return summary

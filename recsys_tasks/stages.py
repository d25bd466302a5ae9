"""The workflow's stage graph, declared once: the Airflow DAG and ``recsys run`` are both built from it.

    extract ──┬── kg_embed ───┐
              └── text_embed ─┴── finetune ── evaluate ── register

Each stage is ``run(cfg, inputs, out_dir) -> StageResult`` over one library function; ``inputs``
holds the results of the stages it ``needs``. Nothing heavy is imported here (the DAG file imports
this module at parse time): each stage imports its library function when it runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from recsys_tasks.artifacts import StageResult
from recsys_tasks.config import PipelineConfig, TextConfig

Inputs = Mapping[str, StageResult]


@dataclass(frozen=True)
class RunContext:
    """What every stage of one workflow run shares: the resolved config, the run and where it writes."""

    cfg: PipelineConfig
    run_id: str
    run_dir: Path
    tracking_uri: str | None = None  # MLflow store; None: the environment's (`config.tracking_uri`)

    @property
    def root(self) -> Path:
        """The workdir the run lives in (``<root>/runs/<run id>``): its caches sit beside the runs."""
        return self.run_dir.parent.parent


@dataclass(frozen=True)
class Stage:
    name: str
    needs: tuple[str, ...]  # stages whose results this one reads (the DAG's edges)
    gpu: bool  # runs on the GPU queue where the DAG runs on Celery workers
    run: Callable[[RunContext, Inputs, Path], StageResult]
    doc: str
    figures: tuple[tuple[str, str], ...] = ()  # (metric or info key, label): the stage's line in `make run`


def _extract(ctx: RunContext, inputs: Inputs, out: Path) -> StageResult:
    from recsys_tasks.data.extract import extract

    return extract(ctx.cfg.extract, out)


def _kg_embed(ctx: RunContext, inputs: Inputs, out: Path) -> StageResult:
    from recsys_tasks.kg.embed import kg_embed

    return kg_embed(ctx.cfg.kg, inputs["extract"].out_dir, out, ctx.cfg.extract.positive_threshold)


def text_config(ctx: RunContext) -> TextConfig:
    """The run's text config, its vector cache in the run's workdir unless set (not the process's,
    `config.workdir`): text_embed and the DAG's encoding shards must share one cache."""
    cfg = ctx.cfg.text
    return replace(cfg, cache_dir=str(ctx.root / "cache" / "text")) if not cfg.cache_dir.strip() else cfg


def _text_embed(ctx: RunContext, inputs: Inputs, out: Path) -> StageResult:
    from recsys_tasks.text.embed import text_embed

    cfg = ctx.cfg
    return text_embed(
        text_config(ctx), inputs["extract"].out_dir, out, cfg.extract.positive_threshold, cfg.extract.seed
    )


def _finetune(ctx: RunContext, inputs: Inputs, out: Path) -> StageResult:
    from recsys_tasks.model.finetune import finetune

    return finetune(
        ctx.cfg.finetune,
        inputs["extract"].out_dir,
        inputs["kg_embed"].out_dir,
        inputs["text_embed"].out_dir,
        out,
        ctx.cfg.text.model,
        ctx.cfg.extract.positive_threshold,
    )


def _evaluate(ctx: RunContext, inputs: Inputs, out: Path) -> StageResult:
    from recsys_tasks.evaluation.evaluate import evaluate

    return evaluate(
        ctx.cfg.evaluate,
        inputs["extract"].out_dir,
        inputs["text_embed"].out_dir,
        inputs["finetune"].artifacts["bundle"],
        out,
        ctx.cfg.extract.positive_threshold,
    )


def _register(ctx: RunContext, inputs: Inputs, out: Path) -> StageResult:
    from recsys_tasks.registry.register import register

    registered = register(ctx.cfg, inputs, run_name=ctx.run_id, uri=ctx.tracking_uri)
    return StageResult("register", str(out), info=dict(registered))


STAGES: tuple[Stage, ...] = (
    Stage(
        "extract",
        (),
        False,
        _extract,
        "read the source, validate it, snapshot it to Parquet, build the cold-start split",
        (("n_users", "users"), ("n_items", "items"), ("n_interactions", "interactions")),
    ),
    Stage(
        "kg_embed",
        ("extract",),
        False,
        _kg_embed,
        "embed the knowledge graph (items, attributes, demographics, likes) with PyKEEN",
        (("n_triples", "triples"), ("epochs_trained", "epochs"), ("mrr", "MRR")),
    ),
    Stage(
        "text_embed",
        ("extract",),
        True,
        _text_embed,
        "encode item, profile and stated-taste text with a BERT-family encoder",
        (("n_texts", "texts"), ("texts_per_second", "texts/s")),
    ),
    Stage(
        "finetune",
        ("extract", "kg_embed", "text_embed"),
        True,
        _finetune,
        "train the hybrid two-tower model, its content map and its fusion",
        (("epochs_trained", "epochs"), ("val_ndcg", "validation NDCG@20")),
    ),
    Stage(
        "evaluate",
        ("extract", "text_embed", "finetune"),
        False,
        _evaluate,
        "score every cold-start slice, the baselines fit in the same run",
        (("cold_mean_ndcg", "cold-slice NDCG"), ("cold_mean_ndcg/best_baseline", "best baselines")),
    ),
    Stage(
        "register",
        ("extract", "kg_embed", "text_embed", "finetune", "evaluate"),
        False,
        _register,
        "log the run to MLflow, register the model, move `champion` only if it is better",
        (("model_version", "version"), ("alias", "alias")),
    ),
)
BY_NAME = {stage.name: stage for stage in STAGES}


def run_stage(stage: Stage, ctx: RunContext, inputs: Inputs) -> StageResult:
    """Run one stage into ``<run dir>/<stage>``; its wall time lands in ``info["seconds"]``."""
    start = time.perf_counter()
    result = stage.run(ctx, {name: inputs[name] for name in stage.needs}, ctx.run_dir / stage.name)
    return replace(result, info={**result.info, "seconds": round(time.perf_counter() - start, 2)})


def progress_line(stage: Stage, result: StageResult) -> str:
    """``finetune      41.2 s  epochs 12, validation NDCG@20 0.3412``: one stage's line in `make run`."""
    found = {**result.info, **result.metrics}
    figures = ", ".join(f"{label} {_figure(found[key])}" for key, label in stage.figures if key in found)
    return f"{stage.name:<11} {result.info.get('seconds', 0.0):7.1f} s  {figures}".rstrip()


def _figure(value: object) -> str:
    if isinstance(value, float):  # counts whole, rates to a decimal, scores to four
        return (
            f"{value:,.0f}"
            if value.is_integer() or abs(value) >= 100
            else f"{value:.1f}"
            if abs(value) >= 1
            else f"{value:.4f}"
        )
    return str(value)

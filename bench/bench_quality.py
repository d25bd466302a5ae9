"""The cold-start table (shared/EVALUATION.md) for N split seeds, and its mean.

Runs extract -> kg_embed -> text_embed -> finetune -> evaluate per seed (baselines fit in the
same run, on the same split) and prints each seed's table, then the mean NDCG@20 per slice
and ranker with the model / best-baseline ratio. No MLflow: this measures, it registers nothing.

    python bench/bench_quality.py [--seeds 42 43 44] [--workdir DIR] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import pandas as pd

from recsys_tasks.config import PipelineConfig
from recsys_tasks.evaluate import evaluate
from recsys_tasks.evaluation import MODEL, RATIO, summary_table, to_markdown
from recsys_tasks.extract import extract
from recsys_tasks.kg import kg_embed
from recsys_tasks.text import text_embed
from recsys_tasks.train import finetune


def run_seed(cfg: PipelineConfig, base: Path, text_dir: Path | None) -> tuple[pd.DataFrame, Path]:
    """One seed's slice x ranker results; the text stage is reused across seeds (it ignores the split)."""
    threshold = cfg.extract.positive_threshold
    ex = extract(cfg.extract, base / "extract")
    kg = kg_embed(cfg.kg, ex.out_dir, base / "kg_embed", threshold)
    if text_dir is None:
        text_dir = Path(text_embed(cfg.text, ex.out_dir, base / "text_embed").out_dir)
    ft = finetune(cfg.finetune, ex.out_dir, kg.out_dir, text_dir, base / "finetune", cfg.text.model, threshold)
    ev = evaluate(cfg.evaluate, ex.out_dir, text_dir, ft.artifacts["bundle"], base / "evaluate", threshold)
    return pd.read_csv(ev.artifacts["results.csv"]), text_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--workdir", help="default: a temporary directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="recsys-quality-")).resolve()
    frames, text_dir = [], None
    for seed in args.seeds:
        cfg = PipelineConfig().with_overrides([f"extract.seed={seed}", f"finetune.seed={seed}",
                                               f"kg.seed={seed}", *args.set])
        frame, text_dir = run_seed(cfg, root / f"seed{seed}", text_dir)
        print(f"\n## seed {seed}\n\n{to_markdown(summary_table(frame))}", flush=True)
        frames.append(frame.assign(seed=seed))
    every = pd.concat(frames)
    mean = every.groupby(["slice", "ranker", "kind"], sort=False).mean(numeric_only=True).reset_index()
    mean["users"] = mean["users"].round().astype(int)  # users differ a little between seeds
    table = summary_table(mean.drop(columns=["seed"]))
    print(f"\n## mean over seeds {args.seeds}\n\n{to_markdown(table)}")
    ratios = every[every["ranker"] == MODEL].pivot_table(index="slice", columns="seed", values="ndcg@20", sort=False)
    print(f"\nmodel NDCG@20 per seed:\n{ratios.round(4).to_string()}")
    print(f"\n{RATIO} (mean table): " + ", ".join(f"{s}: {r}" for s, r in zip(table['slice'], table[RATIO])))
    print(f"workdir: {root}")


if __name__ == "__main__":
    main()

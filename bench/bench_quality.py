"""The cold-start table (shared/EVALUATION.md) for N split seeds, and its mean.

Runs extract -> kg_embed -> text_embed -> finetune -> evaluate per seed (baselines fit in the
same run, on the same split) and prints each seed's table, then the mean NDCG@20 per slice
and ranker with the model / best-baseline ratio. No MLflow: this measures, it registers nothing.

    python bench/bench_quality.py [--seeds 42 43 44] [--workdir DIR] [--set key=value ...] [--ablations]
        [--variant NAME:KEY=VALUE ...]

--ablations: per seed, the snapshot, KG and text stages once, then finetune + evaluate for the
full model and for each ablation (`ABLATIONS`); prints each variant's mean table and a summary
of model / best baseline per slice and variant. --variant NAME:KEY=VALUE (repeatable): the same for a
variant of one's own (a default against its old value, say).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import pandas as pd

from recsys_tasks.config import PipelineConfig
from recsys_tasks.data.extract import extract
from recsys_tasks.evaluation.evaluate import evaluate
from recsys_tasks.evaluation.table import MODEL, RATIO, summary_table, to_markdown
from recsys_tasks.kg.embed import kg_embed
from recsys_tasks.model.finetune import finetune
from recsys_tasks.text.embed import text_embed

ABLATIONS = {
    "full model": [],
    "without KG": ["finetune.inputs=text,demographics"],
    "without text": ["finetune.inputs=kg,demographics"],
    "without demographics": ["finetune.inputs=text,kg"],
    "without cold-start training": [
        "finetune.id_dropout=0",
        "finetune.empty_history_prob=0",
        "finetune.truncate_histories=false",
        "finetune.profile_dropout=0",
    ],
    "without fusion": ["finetune.fusion=false"],
    "without content map": ["finetune.content_map=false"],
}


def run_seed(
    cfg: PipelineConfig, base: Path, text_dir: Path | None, variants: dict[str, list[str]]
) -> tuple[dict[str, pd.DataFrame], Path]:
    """One seed's slice x ranker results per variant, and the text_embed folder the next seed may reuse. The text stage
    of ``cfg.text`` is reused across seeds (``text_dir``; it ignores the split); a variant with another text config
    runs its own, and so does every seed and variant with ``text.adapt``, which learns from the training part."""
    threshold = cfg.extract.positive_threshold
    ex = extract(cfg.extract, base / "extract")
    kg = kg_embed(cfg.kg, ex.out_dir, base / "kg_embed", threshold)
    out, first = {}, None
    for n, (name, overrides) in enumerate(variants.items()):
        v_cfg, v_base = cfg.with_overrides(overrides), base / f"variant{n}"
        own = v_cfg.text.adapt or v_cfg.text != cfg.text
        if own or text_dir is None:
            where = v_base if own else base
            made = text_embed(v_cfg.text, ex.out_dir, where / "text_embed", threshold, v_cfg.extract.seed)
            if v_cfg.text.adapt:
                print(f"seed {v_cfg.extract.seed}, {name}: text.adapt {made.metrics}", flush=True)
        v_text = Path(made.out_dir) if own or text_dir is None else text_dir
        if not own:
            text_dir = v_text
        first = first or v_text
        ft = finetune(v_cfg.finetune, ex.out_dir, kg.out_dir, v_text, v_base / "finetune", v_cfg.text.model, threshold)
        ev = evaluate(v_cfg.evaluate, ex.out_dir, v_text, ft.artifacts["bundle"], v_base / "evaluate", threshold)
        out[name] = pd.read_csv(ev.artifacts["results.csv"])
    shared = text_dir or first  # the next seed reuses only a folder of cfg.text without text.adapt
    assert shared is not None
    return out, shared


def mean_table(frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The mean (over seeds) slice table and the model's NDCG@20 per slice and seed."""
    every = pd.concat(frames)
    mean = every.groupby(["slice", "ranker", "kind"], sort=False).mean(numeric_only=True).reset_index()
    for column in ("users", "evaluated"):  # users differ a little between seeds
        mean[column] = mean[column].round().astype(int)
    per_seed = every[every["ranker"] == MODEL].pivot_table(index="slice", columns="seed", values="ndcg@20", sort=False)
    return summary_table(mean.drop(columns=["seed"])), per_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--workdir", help="default: a temporary directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--ablations", action="store_true", help="also each ablation of ABLATIONS")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help="also a variant NAME of the model on the same splits with this override (repeat for more overrides "
        "or variants), e.g. --variant old:finetune.min_gain=0 --variant old:finetune.id_patience=6",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="recsys-quality-")).resolve()
    variants = dict(ABLATIONS) if args.ablations else {"full model": []}
    for text in args.variant:
        name, _, override = text.partition(":")
        variants.setdefault(name, []).append(override)
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in variants}
    text_dir = None
    for seed in args.seeds:
        cfg = PipelineConfig().with_overrides(
            [f"extract.seed={seed}", f"finetune.seed={seed}", f"kg.seed={seed}", *args.set]
        )
        results, text_dir = run_seed(cfg, root / f"seed{seed}", text_dir, variants)
        for name, frame in results.items():
            print(f"\n## seed {seed}, {name}\n\n{to_markdown(summary_table(frame))}", flush=True)
            frames[name].append(frame.assign(seed=seed))
    summary = {}
    for name, variant_frames in frames.items():
        table, per_seed = mean_table(variant_frames)
        print(f"\n## {name}: mean over seeds {args.seeds}\n\n{to_markdown(table)}")
        print(f"\nmodel NDCG@20 per seed:\n{per_seed.round(4).to_string()}")
        summary[name] = table.set_index("slice")[RATIO]
    print(f"\n## {RATIO}, mean over seeds {args.seeds}\n")
    print(to_markdown(pd.DataFrame(summary).reset_index(), digits=2))
    print(f"workdir: {root}")


if __name__ == "__main__":
    main()

"""finetune's training step at scale: milliseconds per step of each way the step can run, side by side.

On a workflow run's inputs (the extract, kg_embed and text_embed outputs, e.g. `bench/bench_scale.py`'s run
directory), the model and batches are built as `finetune.train` builds them, then the variants take turns,
``--steps`` steps at a time for ``--repeats`` turns (so the machine's load falls on each alike):

- ``live history``: the item tower over targets, negatives and every history item (``history_refresh=0``);
- ``history table``: histories pooled from a content table refreshed every ``--refresh`` steps (the default);
- ``frozen towers``: the item-ID stage, the content from one table and no tower gradients;
- ``... bf16``: the same step under bfloat16 autocast (`finetune.precision`), where the machine has native bf16.

Printed: per variant the median ms per step (forward, backward and AdamW step) and its ratio to the first.

    python bench/bench_finetune_step.py --run RUN_DIR [--steps 50] [--repeats 3] [--refresh 100]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from recsys_tasks.config import DEFAULT_TEXT_MODEL, FinetuneConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.split import Split
from recsys_tasks.model.batches import Batches
from recsys_tasks.model.finetune import build_bundle, model_spec
from recsys_tasks.model.hybrid import HybridModel
from recsys_tasks.model.precision import autocast, native_bfloat16
from recsys_tasks.model.recommender import Recommender
from recsys_tasks.model.training import StepLoss


def setup(run: Path, cfg: FinetuneConfig):
    dataset, split = Dataset.load(run / "extract"), Split.load(run / "extract")
    bundle = build_bundle(dataset, split, run / "kg_embed", run / "text_embed", DEFAULT_TEXT_MODEL, cfg.max_history)
    spec = model_spec(bundle, cfg)
    model = HybridModel(spec)
    rec = Recommender(bundle, model)
    batches = Batches(rec, split.train, dataset, cfg, 4.0, np.random.default_rng(cfg.seed))
    return bundle, model, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path, help="a run directory with extract/, kg_embed/, text_embed/")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--refresh", type=int, default=FinetuneConfig.history_refresh)
    args = parser.parse_args()
    cfg = FinetuneConfig()
    start = time.perf_counter()
    bundle, model, batches = setup(args.run, cfg)
    print(
        f"{len(bundle.catalog):,} catalog rows, {bundle.meta['n_id_items']:,} trainable, {batches.n_pairs:,} pairs; "
        f"set up in {time.perf_counter() - start:.0f} s; torch threads {torch.get_num_threads()}; "
        f"load {os.getloadavg()}"
    )
    towers = [p for n, p in model.named_parameters() if not n.startswith("item_id")]
    ids = [model.item_id.weight, model.item_id_bias.weight]

    def step_loss(refresh: int) -> StepLoss:
        return StepLoss(
            bundle.item_content,
            bundle.catalog["id_row"].to_numpy(),
            int(bundle.meta["n_id_items"]),
            batches.target_counts(len(bundle.catalog)),
            negatives=cfg.negatives,
            alpha=cfg.negative_alpha,
            id_dropout=cfg.id_dropout,
            seed=cfg.seed,
            device=torch.device("cpu"),
            history_refresh=refresh,
        )

    cpu = torch.device("cpu")
    dtypes = [torch.float32] + ([torch.bfloat16] if native_bfloat16(cpu) else [])
    variants = {}
    for dtype in dtypes:  # (loss, towers frozen, dtype)
        tag = "" if dtype == torch.float32 else " bf16"
        variants[f"live history{tag}"] = (step_loss(0), False, dtype)
        variants[f"history table{tag}"] = (step_loss(args.refresh), False, dtype)
        variants[f"frozen towers{tag}"] = (step_loss(args.refresh), True, dtype)
    timings: dict[str, list[float]] = {name: [] for name in variants}
    epoch = batches.epoch()
    model.train()
    for _ in range(args.repeats):
        for name, (loss_of, frozen, dtype) in variants.items():
            for p in towers:
                p.requires_grad_(not frozen)
            if frozen:
                loss_of.freeze(model)
            optimizer = torch.optim.AdamW(ids if frozen else model.parameters(), lr=1e-4)
            for _ in range(args.steps):
                batch = next(epoch, None) or next(epoch := batches.epoch())
                tick = time.perf_counter()
                with autocast(dtype, cpu):
                    loss = loss_of(model, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                timings[name].append(time.perf_counter() - tick)
    first = float(np.median(next(iter(timings.values()))))
    print(f"{'variant':<20} {'ms/step':>8} {'ratio':>6}")
    for name, seconds in timings.items():
        median = float(np.median(seconds))
        print(f"{name:<20} {median * 1000:8.1f} {median / first:6.2f}")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

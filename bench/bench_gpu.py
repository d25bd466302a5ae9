"""GPU figures: text-embedding throughput on a synthetic catalog, fine-tune seconds per epoch.

Text: a synthetic catalog of ``--texts`` movie-like texts (about 18 tokens each, like the
MovieLens item texts) encoded by the production path, `TextEncoder.encode` (strings in, float32
numpy out: tokenizer threads a few batches ahead, fp16 on CUDA), compared in the same run with
(a) the same encoder with tokenization inline (no overlap) and (b) the ceiling: the model's
forward pass and pooling alone over batches already tokenized and already on the device.

Fine-tune: with ``--stages DIR`` (a run directory holding extract/, kg_embed/ and text_embed/,
e.g. from ``bench/bench_pipeline.py --workdir W`` → W/runs/bench), the finetune stage for
``--epochs`` epochs (no early stopping) on each device in ``--devices``; seconds per epoch
include the per-epoch validation, as in the DAG.

    python bench/bench_gpu.py [--texts 1000000] [--batch 4096] [--model NAME_OR_PATH]
                              [--stages DIR] [--epochs 5] [--devices cuda cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REFERENCE_CEILING = 196_000  # texts/s, all-MiniLM-L6-v2 fp16 on an H100, batch 4096, tokens on the GPU
TARGET = 150_000  # texts/s end to end


def synthetic_texts(n: int, tokenizer, seed: int = 0) -> list[str]:
    """``n`` texts shaped like `text.item_text`: "Word word word (1987). Genres: A, B, C."."""
    rng = np.random.default_rng(seed)
    words = [w for w in tokenizer.get_vocab() if w.isalpha() and w.islower() and len(w) >= 4]
    genres = [
        "Action",
        "Adventure",
        "Animation",
        "Children's",
        "Comedy",
        "Crime",
        "Documentary",
        "Drama",
        "Fantasy",
        "Film-Noir",
        "Horror",
        "Musical",
        "Mystery",
        "Romance",
        "Sci-Fi",
        "Thriller",
        "War",
    ]
    picks = rng.integers(0, len(words), size=(n, 5))
    n_words = rng.integers(2, 6, size=n)
    years = rng.integers(1920, 2025, size=n)
    g = rng.integers(0, len(genres), size=(n, 3))
    n_genres = rng.integers(2, 4, size=n)
    return [
        f"{' '.join(words[j] for j in picks[i, : n_words[i]]).title()} ({years[i]}). "
        f"Genres: {', '.join(genres[j] for j in g[i, : n_genres[i]])}."
        for i in range(n)
    ]


def bench_text(model: str, n: int, batch: int, threads: list[int]) -> dict[str, float]:
    import torch

    from recsys_tasks.text.encoder import TextEncoder

    encoder = TextEncoder(model, device="auto")
    cuda = encoder.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    start = time.perf_counter()
    texts = synthetic_texts(n, encoder.tokenizer)
    print(f"{n} synthetic texts built in {time.perf_counter() - start:.1f} s; e.g. {texts[0]!r}", flush=True)
    sample = encoder.tokenizer(texts[:10_000])["input_ids"]
    tokens = float(np.mean([len(t) for t in sample]))
    print(
        f"device {encoder.device} ({torch.cuda.get_device_name() if cuda else 'cpu'}), "
        f"{tokens:.1f} tokens per text (with [CLS]/[SEP]), batch {batch}",
        flush=True,
    )
    encoder.encode(texts[: min(n, 4 * batch)], batch)  # warm-up: kernels, allocator, pinned pool

    # ceilings: forward + pooling alone over batches already tokenized and on the device
    order = np.argsort([len(t) for t in texts], kind="stable")
    padded = [encoder._padded([texts[i] for i in order[i : i + batch]], pin=False) for i in range(0, n, batch)]
    exact = [enc for i in range(0, n, 8 * batch) for _, enc in encoder.batches(texts, order[i : i + 8 * batch], batch)]
    ceilings = {}
    for label, inputs in (("padded_ceiling_texts_per_s", padded), ("ceiling_texts_per_s", exact)):
        on_device = [{k: v.to(encoder.device) for k, v in enc.items()} for enc in inputs]
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            for enc in on_device:
                encoder.pool(enc)
        sync()
        ceilings[label] = n / (time.perf_counter() - start)
        print(f"{label}: {ceilings[label]:,.0f} ({len(inputs)} batches)", flush=True)
        del on_device
    del padded, exact

    results = {"tokens_per_text": tokens, **ceilings}
    for label, n_threads in [("inline_texts_per_s", 0), ("end_to_end_texts_per_s", None)] + [
        (f"threads_{t}_texts_per_s", t) for t in threads
    ]:
        start = time.perf_counter()
        vectors = encoder.encode(texts, batch, tokenizer_threads=n_threads)
        results[label] = n / (time.perf_counter() - start)
        assert vectors.shape == (n, encoder.dim) and np.isfinite(vectors).all()
        print(f"{label}: {results[label]:,.0f}", flush=True)
    if cuda:
        results["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return results


def bench_finetune(stages: Path, epochs: int, devices: list[str]) -> dict[str, dict[str, float]]:
    from recsys_tasks.config import PipelineConfig
    from recsys_tasks.model.finetune import finetune

    out = {}
    for device in devices:
        cfg = PipelineConfig().with_overrides(
            [f"finetune.epochs={epochs}", f"finetune.patience={epochs + 1}", f"finetune.device={device}"]
        )
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = finetune(
                cfg.finetune,
                stages / "extract",
                stages / "kg_embed",
                stages / "text_embed",
                Path(tmp) / "finetune",
                cfg.text.model,
                cfg.extract.positive_threshold,
            )
            wall = time.perf_counter() - start
        out[device] = {
            "seconds_per_epoch": result.metrics["seconds_per_epoch"],
            "epochs": result.metrics["epochs_trained"],
            "stage_seconds": wall,
            "val_ndcg": result.metrics["val_ndcg"],
        }
        print(f"finetune on {device}: {out[device]}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument(
        "--threads", type=int, nargs="*", default=[], help="also time encode() with these tokenizer thread counts"
    )
    parser.add_argument("--stages", type=Path, help="run directory with extract/, kg_embed/, text_embed/")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    figures: dict = {}
    if args.texts:
        text = figures["text"] = bench_text(args.model, args.texts, args.batch, args.threads)
        print()
        print("| text embedding, all-MiniLM-L6-v2 | texts/s | vs ceiling |")
        print("|---|---:|---:|")
        for label, key in (
            ("forward only, tokens on the device, padded batches + mask", "padded_ceiling_texts_per_s"),
            ("ceiling: forward only, tokens on the device, equal-length batches", "ceiling_texts_per_s"),
            ("encode(), tokenization inline (baseline)", "inline_texts_per_s"),
            ("encode(), tokenizer threads ahead (production)", "end_to_end_texts_per_s"),
        ):
            print(f"| {label} | {text[key]:,.0f} | {text[key] / text['ceiling_texts_per_s']:.0%} |")
        for t in args.threads:
            key = f"threads_{t}_texts_per_s"
            share = text[key] / text["ceiling_texts_per_s"]
            print(f"| encode(), {t} tokenizer threads | {text[key]:,.0f} | {share:.0%} |")
        print(
            f"reference ceiling (H100, fp16, batch 4096): {REFERENCE_CEILING:,} texts/s; target end to end "
            f"{TARGET:,}: {'met' if text['end_to_end_texts_per_s'] >= TARGET else 'MISSED'}"
        )
    if args.stages:
        ft = figures["finetune"] = bench_finetune(args.stages, args.epochs, args.devices)
        print()
        print("| finetune (ML-100K) | s/epoch | vs first device |")
        print("|---|---:|---:|")
        first = ft[args.devices[0]]["seconds_per_epoch"]
        for device, f in ft.items():
            print(f"| {device} | {f['seconds_per_epoch']:.2f} | {f['seconds_per_epoch'] / first:.1f}x |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""The model beside the libraries people would use instead, on the protocol's own slices, over split seeds.

Per seed: the model's stages (bench/bench_quality.py's ``run_seed``: extract -> kg_embed -> text_embed -> finetune
-> evaluate, the protocol's baselines in the same run), then a hand-off of that split (training part,
demographics, genres, year, text vectors, KG links, the finetune's validation users and every slice's queries,
never their positives) to bench/peers_ml100k.py in the peers' own environment, which tunes each peer on
validation and returns its score matrices; they are scored here by the project's own evaluation
(``evaluate_slices``), so model, baselines and peers meet the same queries, candidates and metrics.
Prints one table per seed, then the mean NDCG@20 with a 95% t-interval over seeds per slice and ranker (all
seeds, and the untouched seeds alone), and writes the mean table to bench/out/peers_ml100k.md.

    python bench/bench_peers.py [--seeds 42 43 44 45 46 47 48] [--peers-python bench/out/peers-venv/bin/python]
                                [--workdir DIR] [--no-model] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_quality, a sibling script

from bench_quality import run_seed  # noqa: E402

from recsys_tasks.config import PipelineConfig  # noqa: E402
from recsys_tasks.data.dataset import Dataset, age_band  # noqa: E402
from recsys_tasks.data.extract import extract  # noqa: E402
from recsys_tasks.data.split import Split  # noqa: E402
from recsys_tasks.evaluation.baselines import baselines_for  # noqa: E402
from recsys_tasks.evaluation.table import MODEL, RATIO, evaluate_slices, to_markdown  # noqa: E402
from recsys_tasks.model.held_out import held_out_users  # noqa: E402
from recsys_tasks.protocol.metrics import top_k  # noqa: E402
from recsys_tasks.protocol.queries import Query  # noqa: E402
from recsys_tasks.protocol.slices import Slice, build_slices  # noqa: E402
from recsys_tasks.text.embed import text_embed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PEERS_PYTHON = ROOT / "bench/out/peers-venv/bin/python"
PEERS_SCRIPT = ROOT / "bench/peers_ml100k.py"
TUNED_SEEDS = (42, 43, 44, 45, 46)  # seeds the model's settings were chosen on; 47 and 48: never looked at
PEER = "peer"
KG_MIN_ITEMS = 2  # a KG entity shared by fewer items says nothing about similarity


# ---------------------------------------------------------------------------- the hand-off


def write_handoff(
    dataset: Dataset,
    split: Split,
    slices: Sequence[Slice],
    item_text: np.ndarray,
    validation_users: set[str],
    out: Path,
    seed: int,
    threshold: float,
) -> None:
    """What the peers may see, as arrays in ``out`` (meta.json, train/items/users/slices.npz, kg.npz)."""
    item_ids = dataset.items["item_id"].astype(str)
    user_ids = dataset.users["user_id"].astype(str)
    item_row, user_row = pd.Index(item_ids), pd.Index(user_ids)
    if item_text.shape[0] != len(item_ids):
        raise ValueError(f"item text vectors: {item_text.shape[0]} rows for {len(item_ids)} items")
    train = split.train
    u = user_row.get_indexer(train["user_id"].astype(str))
    i = item_row.get_indexer(train["item_id"].astype(str))
    if (u < 0).any() or (i < 0).any():
        raise ValueError("split: training interactions name users or items missing from the dataset")
    np.savez(
        out / "train.npz",
        u=u.astype(np.int64),
        i=i.astype(np.int64),
        rating=train["rating"].to_numpy(dtype=np.float32),
        timestamp=train["timestamp"].to_numpy(dtype=np.int64),
    )
    genres = sorted({g for gl in dataset.genre_lists() for g in gl if g})
    column = {g: c for c, g in enumerate(genres)}
    genre_matrix = np.zeros((len(item_ids), len(genres)), np.float32)
    for row, gl in enumerate(dataset.genre_lists()):
        genre_matrix[row, [column[g] for g in gl if g]] = 1.0
    year = pd.to_numeric(dataset.items["year"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    np.savez(out / "items.npz", genres=genre_matrix, year=year, text=np.asarray(item_text, np.float32))
    sp.save_npz(out / "kg.npz", kg_links(dataset))
    users = dataset.users
    np.savez(
        out / "users.npz",
        age_band=np.array([age_band(a) for a in users["age"].astype(object)], dtype=str),
        gender=users["gender"].astype(str).to_numpy(dtype=str),
        occupation=users["occupation"].astype(str).to_numpy(dtype=str),
    )
    arrays: dict[str, np.ndarray] = {}
    for n, s in enumerate(slices):
        arrays[f"{n}/users"] = user_row.get_indexer([q.user_id for q in s.queries]).astype(np.int64)
        arrays[f"{n}/candidates"] = s.candidates
        _put_csr(arrays, f"{n}/history", [_history_rows(q, item_row) for q in s.queries])
        _put_csr(arrays, f"{n}/excluded", list(s.excluded) if s.excluded else [np.zeros(0, np.int64)] * s.n_users)
        if (arrays[f"{n}/users"] < 0).any():
            raise ValueError(f"slice {s.name}: a query names a user missing from the dataset")
    np.savez(out / "slices.npz", **arrays)
    meta = {
        "n_users": len(user_ids),
        "n_items": len(item_ids),
        "seed": seed,
        "threshold": threshold,
        "validation_users": sorted(int(r) for r in user_row.get_indexer(sorted(validation_users)) if r >= 0),
        "slices": [s.name for s in slices],
    }
    (out / "meta.json").write_text(json.dumps(meta))


def kg_links(dataset: Dataset) -> sp.csr_matrix:
    """(items, relation:entity) binary matrix from the KG triples touching each item's entity, entities shared
    by at least ``KG_MIN_ITEMS`` items only."""
    entity = dataset.items["entity_id"].astype(str)
    row_of = {e: r for r, e in enumerate(entity) if e}
    kg = dataset.kg.astype(str)
    as_head = kg[kg["head_id"].isin(row_of)]
    as_tail = kg[kg["tail_id"].isin(row_of)]
    rows = np.r_[as_head["head_id"].map(row_of).to_numpy(int), as_tail["tail_id"].map(row_of).to_numpy(int)]
    keys = pd.concat(
        [as_head["relation_id"] + ":" + as_head["tail_id"], "~" + as_tail["relation_id"] + ":" + as_tail["head_id"]]
    ).to_numpy(dtype=str)
    pairs = pd.DataFrame({"row": rows, "key": keys}).drop_duplicates()
    shared = pairs["key"].map(pairs["key"].value_counts()) >= KG_MIN_ITEMS
    pairs = pairs[shared]
    codes, _ = pd.factorize(pairs["key"])
    n_cols = int(codes.max()) + 1 if len(codes) else 0
    return sp.csr_matrix(
        (np.ones(len(pairs), np.float32), (pairs["row"].to_numpy(), codes)), shape=(len(entity), n_cols)
    )


def _history_rows(query: Query, item_row: pd.Index) -> np.ndarray:
    rows = item_row.get_indexer(list(query.history_items))
    return np.unique(rows[rows >= 0])


def _put_csr(arrays: dict[str, np.ndarray], key: str, rows: Sequence[np.ndarray]) -> None:
    arrays[f"{key}/indptr"] = np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int64)
    arrays[f"{key}/indices"] = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)


# ---------------------------------------------------------------------------- the peers' scores, evaluated here


class MatrixScorer:
    """A peer's precomputed (queries x items) scores of one slice, looked up by query (the slice's own objects)."""

    def __init__(self, name: str, queries: Sequence[Query], scores: np.ndarray) -> None:
        if scores.shape[0] != len(queries):
            raise ValueError(f"{name}: {scores.shape[0]} score rows for {len(queries)} queries")
        self.name, self.scores = name, scores
        self.row = {id(q): r for r, q in enumerate(queries)}

    def score(self, queries: Sequence[Query]) -> np.ndarray:
        return self.scores[[self.row[id(q)] for q in queries]]


def peer_scores(slices: Sequence[Slice], scores_dir: Path, peers: Sequence[str]) -> dict[str, dict[str, MatrixScorer]]:
    """{slice name: {peer: scorer}} from the peer runner's ``<peer>.npz`` files (a peer without one is skipped)."""
    out: dict[str, dict[str, MatrixScorer]] = {s.name: {} for s in slices}
    for peer in peers:
        path = scores_dir / f"{peer}.npz"
        if not path.exists():
            continue
        with np.load(path) as z:
            for n, s in enumerate(slices):
                if f"s{n}" in z:
                    out[s.name][peer] = MatrixScorer(peer, s.queries, z[f"s{n}"])
    return out


def evaluate_peers(slices: Sequence[Slice], scorers: dict[str, dict[str, MatrixScorer]], k: int) -> pd.DataFrame:
    """The project's evaluation of each peer on each slice it served (kind "peer")."""
    frames = []
    for s in slices:
        if scorers[s.name]:
            as_baselines = dataclasses.replace(s, baselines=tuple(scorers[s.name]))
            frames.append(evaluate_slices([as_baselines], scorers[s.name], None, k))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(frame):
        frame["kind"] = PEER
    return frame


def top_rows(s: Slice, scorer: Any, k: int, chunk: int = 256) -> np.ndarray:
    """(queries, k) item rows each query's ranker puts first, over that query's candidates."""
    parts = []
    for start in range(0, s.n_users, chunk):
        queries, candidates, _ = s.rows(start, start + chunk)
        parts.append(top_k(np.asarray(scorer.score(queries)), candidates, k))
    return np.concatenate(parts)


def beyond_columns(
    slices: Sequence[Slice], scorers: dict[str, dict[str, Any]], dataset: Dataset, split: Split, k: int
) -> pd.DataFrame:
    """Beyond-accuracy metrics per (slice, ranker) from each ranker's top-k rows, where
    recsys_tasks/protocol/beyond.py (``beyond_accuracy(top_rows, train_popularity, item_genres) -> dict``) exists;
    an empty frame where it does not (yet)."""
    if importlib.util.find_spec("recsys_tasks.protocol.beyond") is None:
        return pd.DataFrame()
    from recsys_tasks.protocol.beyond import beyond_accuracy, genre_matrix, training_popularity

    popularity = training_popularity(dataset.items["item_id"].astype(str).tolist(), split.train)
    genres = genre_matrix(dataset.genre_lists())
    records = []
    for s in slices:
        for ranker, scorer in scorers[s.name].items():
            values = beyond_accuracy(top_rows(s, scorer, k), popularity, genres)
            records.append({"slice": s.name, "ranker": ranker, **values})
    return pd.DataFrame(records)


# ---------------------------------------------------------------------------- tables


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the t-interval over seeds (NaN half-width below 2 values; NaNs dropped)."""
    x = np.asarray([v for v in values if not (v is None or math.isnan(v))], dtype=np.float64)
    if not len(x):
        return math.nan, math.nan
    if len(x) < 2:
        return float(x.mean()), math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)


def seed_table(frame: pd.DataFrame, metric: str = "ndcg@20") -> pd.DataFrame:
    """One seed: rankers as rows (kind, name), slices as columns, ``metric`` in the cells."""
    wide = frame.pivot_table(index=["kind", "ranker"], columns="slice", values=metric, aggfunc="first", sort=False)
    wide = wide.reindex(columns=list(dict.fromkeys(frame["slice"])))
    return wide.reset_index()


def mean_table(frames: Sequence[pd.DataFrame], metric: str = "ndcg@20") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Over seeds: (rankers x slices cells "mean ±half" as text, and the numeric means and half-widths, long)."""
    every = pd.concat(frames, ignore_index=True)
    slices = list(dict.fromkeys(every["slice"]))
    records = []
    for (kind, ranker, slice_name), rows in every.groupby(["kind", "ranker", "slice"], sort=False):
        mean, half = mean_interval(rows[metric].tolist())
        records.append(
            {"kind": kind, "ranker": ranker, "slice": slice_name, "mean": mean, "half": half, "seeds": len(rows)}
        )
    long = pd.DataFrame(records)
    order = {"baseline": 0, PEER: 1, MODEL: 2}
    rankers = (
        long[["kind", "ranker"]]
        .drop_duplicates()
        .sort_values("kind", key=lambda k: k.map(order), kind="stable")
        .itertuples(index=False)
    )
    table = []
    for kind, ranker in rankers:
        row: dict[str, Any] = {"ranker": ranker, "kind": kind}
        for slice_name in slices:
            hit = long[(long["ranker"] == ranker) & (long["kind"] == kind) & (long["slice"] == slice_name)]
            row[slice_name] = _cell(*hit[["mean", "half"]].iloc[0]) if len(hit) else ""
        table.append(row)
    return pd.DataFrame(table), long


def best_table(long: pd.DataFrame) -> pd.DataFrame:
    """Per slice: the best baseline and the best peer by mean, the model, and the model's ratio to each."""
    out = []
    for slice_name, rows in long.groupby("slice", sort=False):
        row: dict[str, Any] = {"slice": slice_name}
        for kind, label in (("baseline", "best baseline"), (PEER, "best peer")):
            some = rows[rows["kind"] == kind].dropna(subset=["mean"])
            if len(some):
                best = some.loc[some["mean"].idxmax()]
                row[label] = f"{best['ranker']} {_cell(best['mean'], best['half'])}"
                row[f"_{kind}"] = best["mean"]
            else:
                row[label], row[f"_{kind}"] = "", math.nan
        model = rows[rows["kind"] == MODEL]
        row["model"] = _cell(*model[["mean", "half"]].iloc[0]) if len(model) else ""
        m = float(model["mean"].iloc[0]) if len(model) else math.nan
        row[RATIO] = m / row["_baseline"]
        row["model / best peer"] = f"{m / row[f'_{PEER}']:.2f}x" if row[f"_{PEER}"] == row[f"_{PEER}"] else ""
        out.append({k: v for k, v in row.items() if not k.startswith("_")})
    return pd.DataFrame(out)


def seeds_ahead(frames: Sequence[pd.DataFrame], metric: str = "ndcg@20") -> dict[str, str]:
    """Per slice, "k/n": on how many of the n seeds the model scored above every peer of that seed."""
    ahead: dict[str, list[bool]] = {}
    for frame in frames:
        for slice_name, rows in frame.groupby("slice", sort=False):
            peers, model = rows[rows["kind"] == PEER][metric].dropna(), rows[rows["kind"] == MODEL][metric]
            if len(peers) and len(model):
                ahead.setdefault(str(slice_name), []).append(bool(model.iloc[0] > peers.max()))
    return {name: f"{sum(wins)}/{len(wins)}" for name, wins in ahead.items()}


def _cell(mean: float, half: float) -> str:
    if mean != mean:
        return ""
    return f"{mean:.4f}" + (f" ±{half:.4f}" if half == half else "")


# ---------------------------------------------------------------------------- one seed


def run_peers(python: Path, handoff: Path, out: Path, peers: Sequence[str], threads: int) -> dict[str, Any]:
    """bench/peers_ml100k.py in the peers' environment; its report.json (its stderr goes to ours)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    cmd = [str(python), str(PEERS_SCRIPT), str(handoff), str(out), "--peers", ",".join(peers)]
    proc = subprocess.run([*cmd, "--threads", str(threads)], env=env, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"peers runner failed ({proc.returncode}): {' '.join(cmd)}")
    return json.loads((out / "report.json").read_text())


def one_seed(
    cfg: PipelineConfig,
    base: Path,
    text_dir: Path | None,
    with_model: bool,
    python: Path,
    peers: Sequence[str],
    threads: int,
    reuse: bool = False,
    reuse_peers: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], Path]:
    """(slice x ranker results: baselines, peers and the model; beyond-accuracy rows; the peers' report; text dir)."""
    threshold = cfg.extract.positive_threshold
    reused = base / "variant0/evaluate/results.csv"  # run_seed's layout for its first (only) variant
    if with_model and reuse and reused.exists() and text_dir is not None:
        # the model's stages of an earlier run of this command in this workdir: the same split, read back
        frame, snapshot = pd.read_csv(reused), base / "extract"
        print(f"seed {cfg.extract.seed}: the model's results read back from {reused}", flush=True)
    elif with_model:
        results, text_dir = run_seed(cfg, base, text_dir, {"full model": []})
        frame = results["full model"]
        snapshot = base / "extract"
    else:  # the protocol's baselines alone (debugging the peers): no KG, no finetune
        snapshot = Path(extract(cfg.extract, base / "extract").out_dir)
        if text_dir is None:
            text_dir = Path(text_embed(cfg.text, snapshot, base / "text_embed").out_dir)
        frame = None
    assert text_dir is not None
    dataset, split = Dataset.load(snapshot), Split.load(snapshot)
    item_text = np.load(text_dir / "items.npy")
    slices = build_slices(dataset, split, cfg.evaluate, threshold)
    if frame is None:
        frame = evaluate_slices(
            slices, baselines_for(dataset, split, cfg.evaluate, item_text, threshold), None, cfg.evaluate.k
        )
    ft = cfg.finetune
    validation_users, _ = held_out_users(  # the finetune's own draw: its first sample is the validation users
        split.train,
        ft.validation_user_frac,
        ft.fusion_user_frac if ft.fusion else 0.0,
        np.random.default_rng(ft.seed),
        ft.max_validation_users,
        ft.max_fusion_users,
    )
    handoff, scores_dir = base / "peers-handoff", base / "peers-scores"
    handoff.mkdir(parents=True, exist_ok=True)
    scores_dir.mkdir(parents=True, exist_ok=True)
    write_handoff(dataset, split, slices, item_text, validation_users, handoff, cfg.extract.seed, threshold)
    start = time.perf_counter()
    earlier = scores_dir / "report.json"
    if reuse_peers and earlier.exists() and set(peers) <= set(json.loads(earlier.read_text())["peers"]):
        report = json.loads(earlier.read_text())  # an earlier run's peers on this very hand-off
        print(f"seed {cfg.extract.seed}: the peers' scores read back from {scores_dir}", flush=True)
    else:
        report = run_peers(python, handoff, scores_dir, peers, threads) if peers else {"peers": {}}
    report["seconds"] = time.perf_counter() - start
    scorers = peer_scores(slices, scores_dir, peers)
    peer_frame = evaluate_peers(slices, scorers, cfg.evaluate.k)
    rankers: dict[str, dict[str, Any]] = {name: dict(by_peer) for name, by_peer in scorers.items()}
    bundle = base / "variant0/finetune/bundle"  # run_seed's layout
    if with_model and bundle.exists() and importlib.util.find_spec("recsys_tasks.protocol.beyond") is not None:
        from recsys_tasks.model.recommender import Recommender

        fitted = baselines_for(dataset, split, cfg.evaluate, item_text, threshold)
        model = Recommender.load(bundle)
        for s in slices:
            rankers[s.name].update({b: fitted[b] for b in s.baselines if b in fitted})
            rankers[s.name][MODEL] = model
    beyond = beyond_columns(slices, rankers, dataset, split, cfg.evaluate.k)
    return pd.concat([frame, peer_frame], ignore_index=True), beyond, report, text_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44, 45, 46, 47, 48])
    parser.add_argument("--peers", default="lightfm,ease,cornac_bpr,vbpr,als,bpr")
    parser.add_argument("--peers-python", type=Path, default=PEERS_PYTHON, help="the peers' environment's python")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", help="default: a temporary directory")
    parser.add_argument("--markdown", type=Path, default=ROOT / "bench/out/peers_ml100k.md")
    parser.add_argument("--no-model", action="store_true", help="baselines and peers only (no KG, no finetune)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--reuse-model",
        action="store_true",
        help="read the model's results back from an earlier run in --workdir where they exist (same seeds, same split)",
    )
    parser.add_argument(
        "--reuse-peers",
        action="store_true",
        help="read the peers' scores back from an earlier run in --workdir where it scored every peer asked for",
    )
    args = parser.parse_args()
    if not args.peers_python.exists():
        parser.error(f"--peers-python: {args.peers_python} does not exist (make bench/out/peers-venv/.installed)")
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="recsys-peers-")).resolve()
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    frames, beyond_frames, chosen = [], [], {}
    text_dir = None
    if args.reuse_model:  # run_seed embeds the text once, in the first seed's folder
        found = sorted(root.glob("seed*/text_embed/items.npy"))
        text_dir = found[0].parent if found else None
    started = time.perf_counter()
    for seed in args.seeds:
        cfg = PipelineConfig().with_overrides(
            [f"extract.seed={seed}", f"finetune.seed={seed}", f"kg.seed={seed}", *args.set]
        )
        t0 = time.perf_counter()
        frame, beyond, report, text_dir = one_seed(
            cfg,
            root / f"seed{seed}",
            text_dir,
            not args.no_model,
            args.peers_python,
            peers,
            args.threads,
            args.reuse_model,
            args.reuse_peers,
        )
        frame = frame.assign(seed=seed)
        frames.append(frame)
        if len(beyond):
            beyond_frames.append(beyond.assign(seed=seed))
        chosen[seed] = {p: r.get("chosen", r.get("error")) for p, r in report["peers"].items()}
        print(f"\n## seed {seed} ({'tuned' if seed in TUNED_SEEDS else 'untouched'}), NDCG@20\n", flush=True)
        print(to_markdown(seed_table(frame)))
        cold_item = frame[frame["slice"] == "cold-item"][["ranker", "auc"]].dropna()
        print("cold-item AUC: " + ", ".join(f"{r} {a:.3f}" for r, a in cold_item.itertuples(index=False)))
        print(f"peers chosen on validation: {json.dumps(chosen[seed])}")
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s (peers {report['seconds']:.0f} s)", flush=True)
    untouched = [s for s in args.seeds if s not in TUNED_SEEDS]
    sections = []
    for label, seeds in (("all seeds", args.seeds), ("untouched seeds", untouched)):
        chosen_frames = [f for f in frames if int(f["seed"].iloc[0]) in seeds]
        if not chosen_frames:
            continue
        table, long = mean_table(chosen_frames)
        auc_table, _ = mean_table(
            [f[f["slice"] == "cold-item"].assign(slice="cold-item AUC") for f in chosen_frames], metric="auc"
        )
        best = best_table(long)
        best["seeds model > every peer"] = best["slice"].map(seeds_ahead(chosen_frames)).fillna("")
        text = (
            f"### NDCG@20, mean ±95% t-interval over {label} {seeds}\n\n{to_markdown(table)}\n"
            f"{to_markdown(auc_table.dropna(axis=0, how='all'))}\n"
            f"### best of each kind per slice ({label})\n\n{to_markdown(best)}"
        )
        sections.append(text)
        print(f"\n{text}")
    if beyond_frames:
        every = pd.concat(beyond_frames, ignore_index=True)
        means = every.drop(columns="seed").groupby(["slice", "ranker"], sort=False).mean().reset_index()
        text = f"### beyond accuracy (top 20), mean over seeds {args.seeds}\n\n{to_markdown(means, digits=3)}"
        sections.append(text)
        print(f"\n{text}")
    else:
        print("\nbeyond accuracy: recsys_tasks/protocol/beyond.py not present; columns left out")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    footer = (
        f"seeds {args.seeds} (tuned: {[s for s in args.seeds if s in TUNED_SEEDS]}, untouched: {untouched}); "
        f"{time.perf_counter() - started:.0f} s; load average at the end {load}\n\n"
        f"peers' settings chosen on validation per seed:\n\n```\n{json.dumps(chosen, indent=1)}\n```\n"
    )
    print(f"\n{footer}\nworkdir: {root}")
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text("\n".join(sections) + "\n" + footer)


if __name__ == "__main__":
    main()

"""The libraries people would use instead, on the same RecBole atomic files and the same held-out users and items.

LightFM (WARP, 64 dims, 10 epochs, 2 threads) as two models: users by demographics alone (for brand-new
users, ranked from their profile) and users by ID plus demographics (for brand-new items, which have their
genres, decade and KG entities alone: no ID feature); items by ID, genres, decade and KG entities in both.
implicit's ALS for warm users, popularity, demographic popularity (age band, gender, occupation; smaller
groups back off to age band and gender, then to everyone) and, for new items, the user's genre profile.
Each system runs in its own process (its peak RSS is its own, the prepared data included); printed per
system: training seconds, peak RSS and NDCG@20 on brand-new users, brand-new items and warm users.

With ``--split EXTRACT_DIR`` (an extract stage's output: split.json and split.parquet) the parts are the
workflow's own; without it, 2% of users and 2% of items are held out here (seeded) and there is no warm test.
Runs in its own environment (bench/requirements-peers.txt), never the project's:

    /tmp/peers-venv/bin/python bench/peers.py --data DIR [--split RUN/extract] [--systems lightfm,als,...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

K = 20
THRESHOLD = 4.0
MIN_GROUP = 20  # training users a demographic group needs before its popularity stands for it
AGE_EDGES = (18, 25, 35, 45, 50, 56)  # MovieLens' age bands
SYSTEMS = ("lightfm", "als", "popularity", "demographic_popularity", "genre_profile")
PARTS = ("train", "warm_test", "cold_user", "cold_item")


# ---- reading and preparing (once, in the parent; every system's process loads the result) ----


def _read_atomic(folder: Path, suffix: str, required: bool = True) -> pd.DataFrame | None:
    found = sorted(folder.glob(f"*{suffix}"))
    if not found:
        if required:
            raise SystemExit(f"{folder}: no *{suffix} file (RecBole atomic files expected)")
        return None
    frame = pd.read_csv(found[0], sep="\t", dtype=str, keep_default_na=False, quoting=3)
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    return frame


def prepare(data: Path, split: Path | None, seed: int, out: Path) -> dict:
    """Codes, parts, features and the held-out ids as arrays in ``out/prepared.npz`` (+ .json); a summary."""
    inter = _read_atomic(data, ".inter")
    users = _read_atomic(data, ".user")
    items = _read_atomic(data, ".item")
    kg, links = _read_atomic(data, ".kg", False), _read_atomic(data, ".link", False)
    assert inter is not None and users is not None and items is not None
    user_ids = users["user_id"].to_numpy()
    item_ids = items["item_id"].to_numpy()
    if split is not None:
        meta = json.loads((split / "split.json").read_text())
        import pyarrow.parquet as pq  # only the workflow's split needs it

        frame = pq.read_table(split / "split.parquet", columns=["user_id", "item_id", "rating", "part"]).to_pandas()
        cold_users, cold_items = set(map(str, meta["cold_users"])), set(map(str, meta["cold_items"]))
    else:
        rng = np.random.default_rng(seed)
        cold_users = set(rng.permutation(np.unique(inter["user_id"]))[: max(1, len(user_ids) // 50)].tolist())
        cold_items = set(rng.permutation(np.unique(inter["item_id"]))[: max(1, len(item_ids) // 50)].tolist())
        frame = inter[["user_id", "item_id", "rating"]].copy()
        part = np.full(len(frame), "train", dtype=object)
        part[frame["item_id"].isin(cold_items).to_numpy()] = "cold_item"
        part[frame["user_id"].isin(cold_users).to_numpy()] = "cold_user"
        frame["part"] = part
    u_index = pd.Index(user_ids.astype(str))
    i_index = pd.Index(item_ids.astype(str))
    u = u_index.get_indexer(frame["user_id"].astype(str))
    i = i_index.get_indexer(frame["item_id"].astype(str))
    if (u < 0).any() or (i < 0).any():
        raise SystemExit(f"{data}: interactions name users or items missing from the .user/.item files")
    part_code = pd.Categorical(frame["part"].astype(str), categories=PARTS).codes
    positive = frame["rating"].astype(float).to_numpy() >= THRESHOLD
    # user demographics: one-hot age band, gender, occupation; groups for demographic popularity
    age = pd.to_numeric(users.get("age", pd.Series("", index=users.index)), errors="coerce")
    band = np.where(age.isna(), len(AGE_EDGES) + 1, np.searchsorted(AGE_EDGES, age.fillna(0), side="right"))
    gender = users.get("gender", pd.Series("", index=users.index)).astype(str)
    occupation = users.get("occupation", pd.Series("", index=users.index)).astype(str)
    demo = _one_hot([("age", band.astype(str)), ("gender", gender), ("occupation", occupation)])
    group_fine = pd.factorize(pd.Series(band.astype(str)) + "|" + gender + "|" + occupation)[0]
    group_coarse = pd.factorize(pd.Series(band.astype(str)) + "|" + gender)[0]
    # item features: genres, decade, KG entities the item's entity points to
    genres = items.get("genres", items.get("class", pd.Series("", index=items.index))).astype(str)
    genre_lists = [g.replace("|", " ").split() for g in genres]
    year = pd.to_numeric(
        items.get("year", items.get("release_year", pd.Series("", index=items.index))), errors="coerce"
    )
    decade = np.where(year.isna(), "unknown", (year.fillna(0) // 10 * 10).astype(int).astype(str))
    rows, cols = [], []
    vocab: dict[str, int] = {}
    for r, gl in enumerate(genre_lists):
        for g in gl:
            rows.append(r)
            cols.append(vocab.setdefault(f"genre:{g}", len(vocab)))
    n_genres = len(vocab)
    for r, d in enumerate(decade):
        rows.append(r)
        cols.append(vocab.setdefault(f"decade:{d}", len(vocab)))
    n_kg = 0
    if kg is not None and links is not None and len(links):
        entity_item = dict(zip(links["entity_id"], links["item_id"].astype(str), strict=True))
        heads = kg[kg["head_id"].isin(entity_item)]
        tails = heads["relation_id"] + ":" + heads["tail_id"]
        shared = tails.map(tails.value_counts()) >= 2  # an entity shared by two items or more says something
        item_rows = i_index.get_indexer(heads["head_id"].map(entity_item))
        before = len(vocab)
        for r, t in zip(item_rows[shared.to_numpy()], tails[shared], strict=True):
            if r >= 0:
                rows.append(int(r))
                cols.append(vocab.setdefault(f"kg:{t}", len(vocab)))
        n_kg = len(vocab) - before
    content = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(item_ids), len(vocab)))
    content.sum_duplicates()
    content.data[:] = 1.0
    genre_matrix = content[:, :n_genres]
    cold_user_mask = np.isin(u_index.to_numpy(), list(cold_users))
    cold_item_mask = np.isin(i_index.to_numpy(), list(cold_items))
    np.savez(
        out / "prepared.npz",
        u=u.astype(np.int32),
        i=i.astype(np.int32),
        part=part_code.astype(np.int8),
        positive=positive,
        group_fine=group_fine,
        group_coarse=group_coarse,
        cold_user=cold_user_mask,
        cold_item=cold_item_mask,
    )
    sp.save_npz(out / "demo.npz", demo)
    sp.save_npz(out / "content.npz", content)
    sp.save_npz(out / "genres.npz", sp.csr_matrix(genre_matrix))
    summary = {
        "users": len(user_ids),
        "items": len(item_ids),
        "interactions": len(frame),
        "cold_users": int(cold_user_mask.sum()),
        "cold_items": int(cold_item_mask.sum()),
        "item_features": {"genres": n_genres, "decades": len(vocab) - n_genres - n_kg, "kg": n_kg},
        "parts": {p: int((part_code == c).sum()) for c, p in enumerate(PARTS)},
        "split": "the workflow's" if split is not None else "2%/2% held out here",
    }
    (out / "prepared.json").write_text(json.dumps(summary))
    return summary


def _one_hot(columns: list[tuple[str, object]]) -> sp.csr_matrix:
    blocks = []
    for _, values in columns:
        codes, _ = pd.factorize(pd.Series(values).astype(str))
        n = len(codes)
        blocks.append(sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), codes)), shape=(n, codes.max() + 1)))
    return sp.hstack(blocks).tocsr()


# ---- the evaluation: NDCG@20 over blocks of queries, never a dense users x items matrix at once ----


class Data:
    def __init__(self, folder: Path) -> None:
        z = np.load(folder / "prepared.npz")
        self.u, self.i, self.part, self.positive = z["u"], z["i"], z["part"], z["positive"]
        self.group_fine, self.group_coarse = z["group_fine"], z["group_coarse"]
        self.cold_user, self.cold_item = z["cold_user"], z["cold_item"]
        self.demo = sp.load_npz(folder / "demo.npz").tocsr()
        self.content = sp.load_npz(folder / "content.npz").tocsr()
        self.genres = sp.load_npz(folder / "genres.npz").tocsr()
        self.n_users, self.n_items = len(self.cold_user), len(self.cold_item)

    def matrix(self, part: str, positives_only: bool = True) -> sp.csr_matrix:
        keep = self.part == PARTS.index(part)
        if positives_only:
            keep &= self.positive
        m = sp.csr_matrix(
            (np.ones(int(keep.sum()), np.float32), (self.u[keep], self.i[keep])), shape=(self.n_users, self.n_items)
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m


def ndcg(
    score: Callable[[np.ndarray], np.ndarray],
    users: np.ndarray,
    positives: sp.csr_matrix,
    candidates: np.ndarray,
    exclude: sp.csr_matrix | None = None,
    block: int = 1024,
) -> tuple[float, int]:
    """Mean NDCG@K over ``users`` with a positive among ``candidates``; ``score(users) -> (len, n_items)``."""
    pos = positives[:, candidates] if candidates.dtype != bool else positives[:, np.flatnonzero(candidates)]
    cand = np.flatnonzero(candidates) if candidates.dtype == bool else candidates
    has = np.asarray(pos[users].sum(axis=1)).ravel() > 0
    users = users[has]
    if not len(users):
        return float("nan"), 0
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])
    total = 0.0
    for start in range(0, len(users), block):
        batch = users[start : start + block]
        s = np.asarray(score(batch), dtype=np.float32)[:, cand]
        if exclude is not None:
            ex = exclude[batch][:, cand].tocoo()
            s[ex.row, ex.col] = -np.inf
        k = min(K, s.shape[1])
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(s, top, axis=1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, axis=1)
        p = pos[batch]
        hits = np.asarray(p[np.arange(len(batch))[:, None], top].todense(), dtype=np.float64)
        dcg = hits @ discounts[:k]
        n_pos = np.minimum(np.asarray(p.sum(axis=1)).ravel(), k).astype(int)
        total += float((dcg / ideal[n_pos]).sum())
    return total / len(users), len(users)


def _slices(d: Data) -> dict[str, tuple[np.ndarray, sp.csr_matrix, np.ndarray, sp.csr_matrix | None]]:
    """new users (all items), new items (the held-out items, for the warm users who liked one), warm users."""
    train = d.matrix("train", positives_only=False)
    out = {
        "new users": (np.flatnonzero(d.cold_user), d.matrix("cold_user"), np.ones(d.n_items, bool), None),
        "new items": (np.arange(d.n_users), d.matrix("cold_item"), d.cold_item, None),
    }
    warm = d.matrix("warm_test")
    if warm.nnz:
        out["warm users"] = (np.arange(d.n_users), warm, ~d.cold_item, train)
    return out


# ---- the systems: each fits (timed), then scores the slices it serves ----


def _popularity(d: Data, train: sp.csr_matrix) -> np.ndarray:
    return np.asarray(train.sum(axis=0)).ravel().astype(np.float32)


def run_system(name: str, folder: Path, threads: int) -> dict:
    d = Data(folder)
    train = d.matrix("train")
    slices = _slices(d)
    start = time.perf_counter()
    scorers: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    if name == "popularity":
        pop = _popularity(d, train)
        scorers = {"new users": lambda b: np.tile(pop, (len(b), 1)), "warm users": lambda b: np.tile(pop, (len(b), 1))}
    elif name == "demographic_popularity":
        pop = _popularity(d, train)
        trained_user = np.asarray(train.sum(axis=1)).ravel() > 0
        by_group = {}
        for groups in (d.group_coarse, d.group_fine):
            g = sp.csr_matrix(
                (np.ones(d.n_users, np.float32), (groups, np.arange(d.n_users))), shape=(groups.max() + 1, d.n_users)
            )
            size = np.asarray(g[:, trained_user].sum(axis=1)).ravel()
            by_group[id(groups)] = ((g @ train).toarray().astype(np.float32), size)

        def demo_score(b: np.ndarray) -> np.ndarray:
            out = np.tile(pop / max(pop.sum(), 1.0), (len(b), 1))
            for groups in (d.group_coarse, d.group_fine):  # the finest group with enough users wins
                counts, size = by_group[id(groups)]
                ok = size[groups[b]] >= MIN_GROUP
                rows = counts[groups[b][ok]]
                out[ok] = rows / np.maximum(rows.sum(axis=1, keepdims=True), 1.0)
            return out

        scorers = {"new users": demo_score}
    elif name == "genre_profile":
        g = d.genres.astype(np.float32)
        profile = train @ g  # users x genres
        profile = sp.csr_matrix(profile.multiply(1.0 / np.maximum(np.asarray(profile.sum(axis=1)), 1.0)))
        scorers = {"new items": lambda b: (profile[b] @ g.T).toarray()}
    elif name == "als":
        from implicit.als import AlternatingLeastSquares

        model = AlternatingLeastSquares(
            factors=64, iterations=15, regularization=0.05, num_threads=threads, random_state=0
        )
        model.fit(train, show_progress=False)
        uf, itf = np.asarray(model.user_factors), np.asarray(model.item_factors)
        scorers = {"warm users": lambda b: uf[b] @ itf.T}
    elif name == "lightfm":
        from lightfm import LightFM

        eye_items = sp.identity(d.n_items, format="csr", dtype=np.float32)
        warm_ids = sp.diags((~d.cold_item).astype(np.float32)).tocsr() @ eye_items  # new items: no ID feature
        items = _normalise(sp.hstack([warm_ids, d.content]).tocsr())
        users_demo = _normalise(d.demo)
        users_full = _normalise(sp.hstack([sp.identity(d.n_users, format="csr", dtype=np.float32), d.demo]).tocsr())
        new_users = LightFM(no_components=64, loss="warp", random_state=0)
        new_users.fit(train.tocoo(), user_features=users_demo, item_features=items, epochs=10, num_threads=threads)
        new_items = LightFM(no_components=64, loss="warp", random_state=0)
        new_items.fit(train.tocoo(), user_features=users_full, item_features=items, epochs=10, num_threads=threads)

        def by(model, user_features):
            ub, ue = model.get_user_representations(user_features)
            ib, ie = model.get_item_representations(items)
            return lambda b: ue[b] @ ie.T + ub[b, None] + ib[None, :]

        scorers = {
            "new users": by(new_users, users_demo),
            "new items": by(new_items, users_full),
            "warm users": by(new_items, users_full),
        }
    elif name != "data":
        raise SystemExit(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")
    seconds = time.perf_counter() - start
    result: dict = {"system": name, "train_seconds": seconds}
    result["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # after training; Linux: KiB
    for slice_name, (users, positives, candidates, exclude) in slices.items():
        if slice_name in scorers:
            value, n = ndcg(scorers[slice_name], users, positives, candidates, exclude)
            result[slice_name] = value
            result[f"{slice_name} n"] = n
    result["rss_mib_with_scoring"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _normalise(m: sp.csr_matrix) -> sp.csr_matrix:
    """Rows summing to one (as lightfm.data.Dataset builds them by default)."""
    sums = np.asarray(m.sum(axis=1)).ravel()
    return (sp.diags(1.0 / np.maximum(sums, 1e-12)) @ m).astype(np.float32).tocsr()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="the folder of RecBole atomic files")
    parser.add_argument("--split", type=Path, help="an extract stage's output folder: its held-out users and items")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="the holdout's seed without --split")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--system", help=argparse.SUPPRESS)  # internal: one system, on --prepared
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.system:
        print(json.dumps(run_system(args.system, args.prepared, args.threads)))
        return
    if args.prepare_only:
        print(json.dumps(prepare(args.data, args.split, args.seed, args.prepared)))
        return
    if args.data is None or not args.data.is_dir():
        parser.error(f"--data: {args.data} is not a folder of RecBole atomic files")
    if args.split is not None and not (args.split / "split.json").exists():
        parser.error(f"--split: {args.split}/split.json does not exist (an extract stage's output folder)")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"--systems: unknown {unknown}; known: {', '.join(SYSTEMS)}")
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        start = time.perf_counter()
        # in a process of its own too: Linux carries a process's peak RSS across fork and exec, so a parent that
        # had read the data would set a floor under every system's figure
        cmd = [sys.executable, __file__, "--prepare-only", "--data", str(args.data), "--prepared", tmp]
        cmd += ["--seed", str(args.seed)] + (["--split", str(args.split)] if args.split else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"peers: reading {args.data} failed:\n{proc.stderr[-2000:]}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        prep = time.perf_counter() - start
        results = []
        for name in ["data", *systems]:  # "data": the interpreter, the libraries and the prepared arrays alone
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, __file__, "--system", name, "--prepared", tmp, "--threads", str(args.threads)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            out, err = proc.communicate()
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                results.append({"system": name, "error": err.strip().splitlines()[-1] if err.strip() else "failed"})
                continue
            row = json.loads(out.strip().splitlines()[-1])
            row["wall_seconds"] = wall
            results.append(row)
    print(
        f"data: {summary['users']:,} users, {summary['items']:,} items, {summary['interactions']:,} interactions; "
        f"held out ({summary['split']}): {summary['cold_users']:,} users, {summary['cold_items']:,} items; "
        f"item features {summary['item_features']}; prepared in {prep:.1f} s; "
        f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print()
    print(
        "| system | train s | peak RSS MiB (trained / scored) | new users NDCG@20 (n) | new items NDCG@20 (n) "
        "| warm users NDCG@20 (n) |"
    )
    print("|---|---:|---:|---|---|---|")
    for row in results:
        if "error" in row:
            print(f"| {row['system']} | failed: {row['error']} | | | | |")
            continue
        cells = []
        for s in ("new users", "new items", "warm users"):
            cells.append(f"{row[s]:.4f} ({row[f'{s} n']:,})" if s in row and row[s] == row[s] else "-")
        print(
            f"| {row['system']} | {row['train_seconds']:.1f} "
            f"| {row['rss_mib']:.0f} / {row['rss_mib_with_scoring']:.0f} | " + " | ".join(cells) + " |"
        )
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "results": results}, indent=1))


if __name__ == "__main__":
    main()

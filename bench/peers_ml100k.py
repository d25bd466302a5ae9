"""The libraries people would use instead, on the protocol's own slices (written by bench/bench_peers.py).

Reads a hand-off folder (the split's training part, users' demographics, items' genres, year, text vectors and KG
links, the validation users the model's finetune holds out, and every slice's queries: user, history, exclusions;
never a slice's positives), tunes each peer on a validation carved from the training part, refits the chosen
setting on the whole training part and writes each slice's score matrix (queries x items) as ``<peer>.npz``;
the project's evaluation (bench/bench_peers.py) scores them. Runs in its own environment (bench/requirements-peers.txt):

    bench/out/peers-venv/bin/python bench/peers_ml100k.py HANDOFF OUT [--peers lightfm,ease,...] [--threads 1]

Peers and what each serves (a slice a peer cannot serve is left out, never filled):
- lightfm (LightFM 1.17, WARP): users = ID + demographics (age band, gender, occupation); items = ID (trained
  items only) + genres + decade + KG entities (+ the text vectors' top principal components, a grid choice).
  cold-user@0 and @0+text: the demographics alone (the sentence is not read); cold-user@K: fold-in (below) from
  the demographic representation; cold-item: the content features alone; warm: the fitted users.
- ease (cornac EASE): history x B for cold-user@K and warm.
- cornac_bpr (cornac BPR), bpr (implicit BPR): fitted users for warm; fold-in for cold-user@K.
- vbpr (cornac VBPR with the item text vectors): warm, cold-item (an unseen item scores by its text: theta_u E f
  + beta' f), fold-in for cold-user@K.
- als (implicit ALS): fitted users for warm; ``recalculate_user`` from the history for cold-user@K.
Fold-in (models without one): the new user's vector fitted by full-batch BPR (the history against every other
item, Adam, item side fixed), regularised toward its start (zero, or LightFM's demographic representation); its
strength is chosen on validation cold-user@10 per setting.

Validation (never the test slices): the finetune's validation users keep the first 80% of their training
interactions (by time) in the fit; a seeded 10% of the trained items leave the fit. Tasks: "warm" (those users,
their first 80% -> later positives), "at_10" (the same users from their 10 earliest items), "at_0" (demographics
alone), "cold_item" (other users' positives on the held-out items, ranked among those items). Per kind of slice a peer
serves, the setting with the best NDCG@20 on that kind's task (warm -> warm, cold-user@K -> at_10, cold-user@0 ->
at_0, cold-item -> cold_item) is refit on the whole training part: a peer may use a different setting per kind.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

K = 20
VALIDATION_ITEM_FRAC = 0.1
WARM_CUT = 0.8
FOLD_SUPPORT = 10
PEERS = ("lightfm", "ease", "cornac_bpr", "vbpr", "als", "bpr")
FOLD_REGS = (0.01, 0.1, 1.0)
LIGHTFM_KG_MIN_ITEMS = 10  # LightFM's cost grows with features per item: KG entities of 10 items or more only
# what each peer serves, by kind of slice: "profile" (cold-user@0, @0+text), "fold" (cold-user@K>0),
# "content" (cold-item), "warm"
SERVES = {
    "lightfm": ("profile", "fold", "content", "warm"),
    "ease": ("fold", "warm"),
    "cornac_bpr": ("fold", "warm"),
    "vbpr": ("fold", "content", "warm"),
    "als": ("fold", "warm"),
    "bpr": ("fold", "warm"),
}
GRIDS: dict[str, list[dict[str, Any]]] = {
    "lightfm": [{"components": 64, "epochs": 30, "text_components": t} for t in (0, 16)],
    "ease": [{"lamb": lam, "posB": p} for lam, p in itertools.product((100, 300, 1000, 3000, 10000), (True, False))],
    "cornac_bpr": [
        {"k": k, "learning_rate": lr, "max_iter": 200} for k, lr in itertools.product((32, 64), (0.01, 0.05))
    ],
    "vbpr": [{"k": 16, "lambda_w": lw, "n_epochs": 20} for lw in (0.01, 0.1)],
    "als": [{"factors": f, "regularization": 0.5, "alpha": a} for f, a in itertools.product((32, 64, 128), (1.0, 5.0))],
    "bpr": [{"factors": f, "learning_rate": lr} for f, lr in itertools.product((32, 64), (0.01, 0.05))],
}


def kind_of(slice_name: str) -> str:
    """The kind of a protocol slice: profile, fold, content or warm."""
    if slice_name == "cold-item":
        return "content"
    if slice_name == "warm":
        return "warm"
    if slice_name.startswith("cold-user@"):
        rest = slice_name.removeprefix("cold-user@")
        return "profile" if rest.split("+")[0] == "0" else "fold"
    raise ValueError(f"unknown slice {slice_name!r}")


# ---------------------------------------------------------------------------- the hand-off


@dataclass
class Handoff:
    n_users: int
    n_items: int
    seed: int
    train_u: np.ndarray
    train_i: np.ndarray
    train_rating: np.ndarray
    train_time: np.ndarray
    threshold: float
    validation_users: np.ndarray
    demo: sp.csr_matrix  # users x one-hot(age band, gender, occupation)
    content: sp.csr_matrix  # items x one-hot(genres, decade, KG entities)
    n_content_fixed: int  # the genre and decade columns of ``content``; the KG's follow
    text: np.ndarray  # items x text dims
    slices: list[dict[str, Any]]  # name, candidates, users, history (CSR), excluded (CSR)

    @classmethod
    def load(cls, folder: Path) -> Handoff:
        meta = json.loads((folder / "meta.json").read_text())
        train = np.load(folder / "train.npz")
        items = np.load(folder / "items.npz")
        users = np.load(folder / "users.npz")
        z = np.load(folder / "slices.npz")
        slices = []
        for n, name in enumerate(meta["slices"]):
            slices.append(
                {
                    "name": name,
                    "users": z[f"{n}/users"],
                    "candidates": z[f"{n}/candidates"],
                    "history": _csr(z, f"{n}/history", meta["n_items"]),
                    "excluded": _csr(z, f"{n}/excluded", meta["n_items"]),
                }
            )
        year = items["year"]
        decade = np.where(np.isnan(year), -1, (np.nan_to_num(year) // 10 * 10)).astype(int)
        fixed = sp.hstack([sp.csr_matrix(items["genres"]), _one_hot_columns(decade)]).tocsr()
        content = sp.hstack([fixed, sp.load_npz(folder / "kg.npz")]).tocsr()
        demo = sp.hstack([_one_hot_columns(users[c]) for c in ("age_band", "gender", "occupation")]).tocsr()
        return cls(
            meta["n_users"],
            meta["n_items"],
            meta["seed"],
            train["u"],
            train["i"],
            train["rating"],
            train["timestamp"],
            meta["threshold"],
            np.asarray(meta["validation_users"], dtype=np.int64),
            demo.astype(np.float32),
            content.astype(np.float32),
            fixed.shape[1],
            items["text"].astype(np.float32),
            slices,
        )


def _csr(z: Any, key: str, n_items: int) -> sp.csr_matrix:
    indptr, indices = z[f"{key}/indptr"], z[f"{key}/indices"]
    return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(len(indptr) - 1, n_items))


def _one_hot_columns(codes: np.ndarray) -> sp.csr_matrix:
    values, inverse = np.unique(np.asarray(codes), return_inverse=True)
    n = len(inverse)
    return sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), inverse)), shape=(n, len(values)))


def binary(n_users: int, n_items: int, u: np.ndarray, i: np.ndarray) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(n_users, n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    m.sort_indices()
    return m


# ---------------------------------------------------------------------------- validation


@dataclass
class Task:
    name: str  # warm, at_10, at_0, cold_item
    users: np.ndarray
    history: sp.csr_matrix  # what the ranker sees (rows = users)
    candidates: np.ndarray  # (n_items,) bool
    positives: sp.csr_matrix


def validation(h: Handoff) -> tuple[sp.csr_matrix, np.ndarray, list[Task]]:
    """The validation fit matrix, the items kept out of it and the validation tasks (docstring above)."""
    rng = np.random.default_rng(h.seed)
    trained = np.unique(h.train_i)
    held_items = np.sort(rng.choice(trained, size=max(1, int(len(trained) * VALIDATION_ITEM_FRAC)), replace=False))
    is_held_item = np.zeros(h.n_items, bool)
    is_held_item[held_items] = True
    order = np.lexsort((h.train_i, h.train_time, h.train_u))
    u, i, r = h.train_u[order], h.train_i[order], h.train_rating[order]
    is_val = np.isin(u, h.validation_users)
    # each validation user's position in their own time-ordered interactions, and how many they have
    starts = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1]
    counts = np.diff(np.r_[starts, len(u)])
    position = np.arange(len(u)) - np.repeat(starts, counts)
    total = np.repeat(counts, counts)
    early = position < np.floor(total * WARM_CUT)
    fit_keep = ~is_held_item[i] & (~is_val | early)
    fit = binary(h.n_users, h.n_items, u[fit_keep], i[fit_keep])
    liked = r >= h.threshold
    everything = np.ones(h.n_items, bool)
    users = np.unique(u[is_val])
    tasks = []
    # warm: first 80% -> later liked items (held-out items too: they are in the catalogue, unseen by the fit)
    hist = binary(h.n_users, h.n_items, u[is_val & early], i[is_val & early])[users]
    late = binary(h.n_users, h.n_items, u[is_val & ~early & liked], i[is_val & ~early & liked])[users]
    tasks.append(Task("warm", users, hist, everything, _minus(late, hist)))
    first = is_val & (position < FOLD_SUPPORT)
    hist10 = binary(h.n_users, h.n_items, u[first], i[first])[users]
    later = binary(h.n_users, h.n_items, u[is_val & ~first & liked], i[is_val & ~first & liked])[users]
    tasks.append(Task("at_10", users, hist10, everything, _minus(later, hist10)))
    all_liked = binary(h.n_users, h.n_items, u[is_val & liked], i[is_val & liked])[users]
    tasks.append(Task("at_0", users, sp.csr_matrix((len(users), h.n_items), dtype=np.float32), everything, all_liked))
    on_held = ~is_val & liked & is_held_item[i]
    item_users = np.unique(u[on_held])
    tasks.append(
        Task(
            "cold_item",
            item_users,
            fit[item_users],
            is_held_item,
            binary(h.n_users, h.n_items, u[on_held], i[on_held])[item_users],
        )
    )
    return fit, held_items, [t for t in tasks if t.positives.nnz]


def _minus(a: sp.csr_matrix, b: sp.csr_matrix) -> sp.csr_matrix:
    out = (a - a.multiply(b)).tocsr()
    out.eliminate_zeros()
    return out


TASK_KIND = {"warm": "warm", "at_10": "fold", "at_0": "profile", "cold_item": "content"}


def ndcg(scores: np.ndarray, candidates: np.ndarray, positives: sp.csr_matrix) -> float:
    """Mean NDCG@K over rows with a positive; ``candidates`` (rows, items) or (items,) bool."""
    s = np.where(np.broadcast_to(candidates, scores.shape), scores, -np.inf)
    top = np.argsort(-s, axis=1, kind="stable")[:, :K]
    rel = positives.toarray() > 0
    rel &= np.broadcast_to(candidates, rel.shape)
    n_pos = rel.sum(axis=1)
    keep = n_pos > 0
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    dcg = np.take_along_axis(rel, top, axis=1) @ discounts[: top.shape[1]]
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.minimum(n_pos, K)]
    return float((dcg[keep] / ideal[keep]).mean()) if keep.any() else float("nan")


# ---------------------------------------------------------------------------- fold-in


def fold_in(
    item_vectors: np.ndarray,
    item_bias: np.ndarray,
    histories: sp.csr_matrix,
    start: np.ndarray,
    reg: float,
    steps: int = 50,
    lr: float = 0.05,
    negatives: int = 256,
    seed: int = 0,
    block: int = 512,
) -> np.ndarray:
    """User vectors fitted to their histories by BPR (every history item against ``negatives`` items drawn afresh
    each step, the history's own draws left out), Adam on the user vector alone, regularised toward ``start``."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    V = torch.from_numpy(np.ascontiguousarray(item_vectors, dtype=np.float32))
    b = torch.from_numpy(np.ascontiguousarray(item_bias, dtype=np.float32))
    out = np.array(start, dtype=np.float32, copy=True)
    rows = np.flatnonzero(np.diff(histories.indptr) > 0)
    for lo in range(0, len(rows), block):
        batch = rows[lo : lo + block]
        h = torch.from_numpy(histories[batch].toarray() > 0)
        k = int(h.sum(1).max())
        order = torch.argsort(h.float(), dim=1, descending=True, stable=True)[:, :k]
        valid = torch.gather(h, 1, order)  # (q, k): the padded positives
        init = torch.from_numpy(out[batch])
        U = init.clone().requires_grad_(True)
        opt = torch.optim.Adam([U], lr=lr)
        for _ in range(steps):
            neg = torch.randint(0, V.shape[0], (len(batch), negatives), generator=generator)
            neg_ok = ~torch.gather(h, 1, neg)
            pos_s = (U[:, None, :] * V[order]).sum(-1) + b[order]  # (q, k)
            neg_s = (U[:, None, :] * V[neg]).sum(-1) + b[neg]  # (q, negatives)
            mask = valid[:, :, None] & neg_ok[:, None, :]
            pair = torch.nn.functional.logsigmoid(pos_s[:, :, None] - neg_s[:, None, :])
            loss = -(pair * mask).sum((1, 2)) / mask.sum((1, 2)).clamp(min=1)
            loss = loss.mean() + reg * ((U - init) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        out[batch] = U.detach().numpy()
    return out


# ---------------------------------------------------------------------------- the peers


class Fitted:
    """A fitted peer: scores (rows, n_items) for the kinds of slice it serves."""

    def warm(self, users: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fold(self, histories: sp.csr_matrix, users: np.ndarray, reg: float) -> np.ndarray:
        raise NotImplementedError

    def profile(self, users: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def content(self, users: np.ndarray) -> np.ndarray:
        return self.warm(users)


class DotModel(Fitted):
    """score = user . item + item bias; new users folded in by BPR from ``start_for``."""

    seed = 0

    def __init__(self, user_vectors: np.ndarray, item_vectors: np.ndarray, item_bias: np.ndarray) -> None:
        self.U, self.V, self.b = user_vectors, item_vectors, item_bias

    def warm(self, users: np.ndarray) -> np.ndarray:
        return self.U[users] @ self.V.T + self.b

    def start_for(self, users: np.ndarray) -> np.ndarray:
        return np.zeros((len(users), self.V.shape[1]), np.float32)

    def fold(self, histories: sp.csr_matrix, users: np.ndarray, reg: float) -> np.ndarray:
        U = fold_in(self.V, self.b, histories, self.start_for(users), reg, seed=self.seed)
        return U @ self.V.T + self.b


class EaseModel(Fitted):
    def __init__(self, B: np.ndarray, fit: sp.csr_matrix) -> None:
        self.B, self.fit_matrix = B, fit

    def warm(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.fit_matrix[users] @ self.B)

    def fold(self, histories: sp.csr_matrix, users: np.ndarray, reg: float) -> np.ndarray:
        return np.asarray(histories @ self.B)


class AlsModel(Fitted):
    def __init__(self, model: Any) -> None:
        self.model = model

    def warm(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.user_factors)[users] @ np.asarray(self.model.item_factors).T

    def fold(self, histories: sp.csr_matrix, users: np.ndarray, reg: float) -> np.ndarray:
        out = np.zeros((histories.shape[0], histories.shape[1]), np.float32)
        rows = np.flatnonzero(np.diff(histories.indptr) > 0)
        if len(rows):
            f = self.model.recalculate_user(np.arange(len(rows)), histories[rows])
            out[rows] = np.asarray(f) @ np.asarray(self.model.item_factors).T
        return out


class LightFMModel(DotModel):
    def __init__(self, model: Any, user_features: sp.csr_matrix, demo_only: sp.csr_matrix, items: sp.csr_matrix):
        ub, ue = model.get_user_representations(user_features)
        ib, ie = model.get_item_representations(items)
        super().__init__(ue, ie, ib)
        self.user_bias = ub
        self.demo_bias, self.demo_vectors = model.get_user_representations(demo_only)

    def warm(self, users: np.ndarray) -> np.ndarray:
        return super().warm(users) + self.user_bias[users, None]

    def profile(self, users: np.ndarray) -> np.ndarray:
        return self.demo_vectors[users] @ self.V.T + self.b

    def start_for(self, users: np.ndarray) -> np.ndarray:
        return self.demo_vectors[users].astype(np.float32)


def _normalise(m: sp.csr_matrix) -> sp.csr_matrix:
    """Rows summing to one in absolute value (as lightfm.data.Dataset builds them)."""
    sums = np.asarray(abs(m).sum(axis=1)).ravel()
    return (sp.diags(1.0 / np.maximum(sums, 1e-12)) @ m).astype(np.float32).tocsr()


def _text_components(text: np.ndarray, n: int) -> np.ndarray:
    centred = text - text.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[:n].T
    return proj / np.maximum(np.abs(proj).max(axis=0), 1e-12)


def fit_peer(name: str, config: dict[str, Any], fit: sp.csr_matrix, h: Handoff, threads: int) -> Fitted:
    """``name`` fitted with ``config`` on the binary (users x items) matrix ``fit``."""
    start = time.perf_counter()
    model = _fit_peer(name, config, fit, h, threads)
    if isinstance(model, DotModel):
        model.seed = h.seed
    print(f"    {name} {config}: fit in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return model


def _fit_peer(name: str, config: dict[str, Any], fit: sp.csr_matrix, h: Handoff, threads: int) -> Fitted:
    seed = h.seed
    trained_items = np.asarray(fit.sum(axis=0)).ravel() > 0
    if name == "ease" or name == "cornac_bpr" or name == "vbpr":
        import cornac

        rows, cols = fit.nonzero()
        data = list(zip(rows.tolist(), cols.tolist(), [1.0] * len(rows), strict=True))
        train_set = cornac.data.Dataset.build(data, fmt="UIR", seed=seed)
        u_idx = np.array(list(train_set.uid_map.keys()), dtype=np.int64)  # raw (our row) in cornac's order
        i_idx = np.array(list(train_set.iid_map.keys()), dtype=np.int64)
        if name == "ease":
            model = cornac.models.EASE(lamb=config["lamb"], posB=config["posB"], verbose=False, seed=seed)
            model.fit(train_set)
            B = np.zeros((h.n_items, h.n_items), np.float32)
            B[np.ix_(i_idx, i_idx)] = model.B
            return EaseModel(B, fit)
        if name == "cornac_bpr":
            model = cornac.models.BPR(
                k=config["k"],
                max_iter=config["max_iter"],
                learning_rate=config["learning_rate"],
                lambda_reg=0.01,
                num_threads=threads,
                seed=seed,
                verbose=False,
            )
            model.fit(train_set)
            U = np.zeros((h.n_users, config["k"]), np.float32)
            V = np.zeros((h.n_items, config["k"]), np.float32)
            b = np.zeros(h.n_items, np.float32)
            U[u_idx], V[i_idx], b[i_idx] = model.u_factors, model.i_factors, model.i_biases
            return DotModel(U, V, b)
        # vbpr: the text vectors as the item "image" features
        import torch

        torch.set_num_threads(threads)
        features = h.text / np.maximum(np.linalg.norm(h.text, axis=1, keepdims=True), 1e-12)
        image = cornac.data.ImageModality(features=features[i_idx], ids=list(i_idx.tolist()))
        image.build(id_map=train_set.iid_map)
        train_set.add_modalities(item_image=image)
        model = cornac.models.VBPR(
            k=config["k"],
            k2=config["k"],
            n_epochs=config["n_epochs"],
            batch_size=1024,  # cornac's default of 100 costs ~100 s a fit on this machine
            learning_rate=0.01,
            lambda_w=config["lambda_w"],
            lambda_b=0.01,
            lambda_e=0.0,
            use_gpu=False,
            verbose=False,
            seed=seed,
        )
        _quiet(lambda: model.fit(train_set))
        k = config["k"]
        Gu = np.zeros((h.n_users, k), np.float32)
        Tu = np.zeros((h.n_users, k), np.float32)
        Gi = np.zeros((h.n_items, k), np.float32)
        beta = np.zeros(h.n_items, np.float32)
        Gu[u_idx], Tu[u_idx] = model.gamma_user, model.theta_user
        Gi[i_idx], beta[i_idx] = model.gamma_item, model.beta_item
        Ti = features @ model.emb_matrix  # every item, seen or not, from its text
        visual = (features @ model.beta_prime).ravel()
        return DotModel(np.hstack([Gu, Tu]), np.hstack([Gi, Ti]).astype(np.float32), (beta + visual).astype(np.float32))
    if name == "als":
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=config["factors"],
                regularization=config["regularization"],
                alpha=config["alpha"],
                iterations=15,
                random_state=seed,
                num_threads=threads,
            )
            model.fit(fit, show_progress=False)
        return AlsModel(model)
    if name == "bpr":
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        model = BayesianPersonalizedRanking(
            factors=config["factors"],
            learning_rate=config["learning_rate"],
            regularization=0.01,
            iterations=100,
            random_state=seed,
            num_threads=threads,
        )
        model.fit(fit, show_progress=False)
        uf, itf = np.asarray(model.user_factors), np.asarray(model.item_factors)
        # implicit's BPR keeps the item bias as the last factor (each user's last factor is 1)
        return DotModel(uf[:, :-1], itf[:, :-1], itf[:, -1])
    if name == "lightfm":
        from lightfm import LightFM

        trained_users = np.asarray(fit.sum(axis=1)).ravel() > 0
        item_id = sp.diags(trained_items.astype(np.float32)).tocsr()  # an untrained item has no ID feature
        kg_items = np.asarray(h.content.sum(axis=0)).ravel()
        keep = np.ones(h.content.shape[1], bool)
        keep[h.n_content_fixed :] = kg_items[h.n_content_fixed :] >= LIGHTFM_KG_MIN_ITEMS
        blocks = [item_id, h.content[:, np.flatnonzero(keep)]]
        if config["text_components"]:
            blocks.append(sp.csr_matrix(_text_components(h.text, config["text_components"])))
        items = _normalise(sp.hstack(blocks).tocsr())
        user_id = sp.diags(trained_users.astype(np.float32)).tocsr()
        users = _normalise(sp.hstack([user_id, h.demo]).tocsr())
        demo_only = _normalise(sp.hstack([sp.csr_matrix(user_id.shape, dtype=np.float32), h.demo]).tocsr())
        model = LightFM(no_components=config["components"], loss="warp", random_state=seed)
        model.fit(fit.tocoo(), user_features=users, item_features=items, epochs=config["epochs"], num_threads=threads)
        return LightFMModel(model, users, demo_only, items)
    raise SystemExit(f"unknown peer {name!r}; known: {', '.join(PEERS)}")


def _quiet(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` with stdout on stderr (cornac's VBPR prints "Optimization finished!")."""
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        return fn()
    finally:
        sys.stdout = saved


def score_kind(model: Fitted, kind: str, users: np.ndarray, history: sp.csr_matrix, reg: float) -> np.ndarray:
    if kind == "warm" or kind == "content":
        return model.warm(users) if kind == "warm" else model.content(users)
    if kind == "profile":
        return model.profile(users)
    return model.fold(history, users, reg)


# ---------------------------------------------------------------------------- tuning and scoring


def tune(name: str, h: Handoff, fit: sp.csr_matrix, tasks: Sequence[Task], threads: int) -> list[dict[str, Any]]:
    """Every setting of the peer's grid, each with its validation NDCG@20 per task and their mean."""
    served = [t for t in tasks if TASK_KIND[t.name] in SERVES[name]]
    results = []
    for config in GRIDS[name]:
        start = time.perf_counter()
        model = fit_peer(name, config, fit, h, threads)
        row: dict[str, Any] = {"config": config}
        for t in served:
            cand = t.candidates if TASK_KIND[t.name] != "warm" else _mask_out(t.candidates, t.history)
            if t.name == "at_10":
                cand = _mask_out(t.candidates, t.history)
                by_reg = {}
                for reg in FOLD_REGS if _folds_by_bpr(model) else (FOLD_REGS[0],):
                    by_reg[reg] = ndcg(score_kind(model, "fold", t.users, t.history, reg), cand, t.positives)
                best = max(by_reg, key=lambda r: by_reg[r])
                row["fold_reg"], row[t.name] = best, by_reg[best]
            else:
                row[t.name] = ndcg(score_kind(model, TASK_KIND[t.name], t.users, t.history, 0.0), cand, t.positives)
        row["mean"] = float(np.mean([row[t.name] for t in served]))
        row["seconds"] = time.perf_counter() - start
        print(f"  {name} {config}: " + ", ".join(f"{t.name} {row[t.name]:.4f}" for t in served), file=sys.stderr)
        results.append(row)
    return results


def _folds_by_bpr(model: Fitted) -> bool:
    return isinstance(model, DotModel)


def _mask_out(candidates: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
    mask = np.repeat(np.asarray(candidates, bool)[None, :], history.shape[0], axis=0)
    mask[history.nonzero()] = False
    return mask


def run(handoff: Path, out: Path, peers: Sequence[str], threads: int) -> dict[str, Any]:
    h = Handoff.load(handoff)
    fit_val, held_items, tasks = validation(h)
    full = binary(h.n_users, h.n_items, h.train_u, h.train_i)
    report: dict[str, Any] = {
        "validation": {
            "users": int(len(h.validation_users)),
            "held_items": int(len(held_items)),
            "tasks": {t.name: int(len(t.users)) for t in tasks},
        },
        "peers": {},
    }
    for name in peers:
        entry: dict[str, Any] = {"serves": list(SERVES[name])}
        try:
            start = time.perf_counter()
            grid = tune(name, h, fit_val, tasks, threads)
            entry["grid"] = grid
            entry["tune_seconds"] = time.perf_counter() - start
            # per kind of slice, the setting best on that kind's validation task (the mean where it has none)
            chosen = {}
            for kind in SERVES[name]:
                task = next((t for t, k in TASK_KIND.items() if k == kind and t in grid[0]), "mean")
                chosen[kind] = max(grid, key=lambda r, task=task: r[task])
            entry["chosen"] = {kind: row["config"] for kind, row in chosen.items()}
            start = time.perf_counter()
            scores = {}
            fitted: dict[str, Fitted] = {}
            for n, s in enumerate(h.slices):
                kind = kind_of(s["name"])
                if kind not in SERVES[name]:
                    continue
                key = json.dumps(chosen[kind]["config"], sort_keys=True)
                if key not in fitted:
                    fitted[key] = fit_peer(name, chosen[kind]["config"], full, h, threads)
                reg = chosen[kind].get("fold_reg", FOLD_REGS[0])
                # warm and cold-item queries are training users: their history is their training part
                matrix = score_kind(fitted[key], kind, s["users"], s["history"], reg)
                scores[f"s{n}"] = np.nan_to_num(np.asarray(matrix, dtype=np.float32), nan=-1e30)
            entry["fit_seconds"] = time.perf_counter() - start
            entry["fits"] = len(fitted)
            np.savez(out / f"{name}.npz", **scores)
            entry["slices"] = [s["name"] for n, s in enumerate(h.slices) if f"s{n}" in scores]
        except Exception as error:  # one failing library must not sink the others; the report says why
            entry["error"] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
        report["peers"][name] = entry
        print(f"{name}: {entry.get('chosen', entry.get('error'))}", file=sys.stderr, flush=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("handoff", type=Path, help="the folder bench/bench_peers.py wrote")
    parser.add_argument("out", type=Path, help="where <peer>.npz and report.json go")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"--peers: unknown {unknown}; known: {', '.join(PEERS)}")
    if not (args.handoff / "meta.json").exists():
        parser.error(f"{args.handoff}: no meta.json (a folder written by bench/bench_peers.py expected)")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    args.out.mkdir(parents=True, exist_ok=True)
    run(args.handoff, args.out, peers, args.threads)


if __name__ == "__main__":
    main()

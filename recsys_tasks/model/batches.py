"""finetune's training batches: (user, liked item) pairs, each with a simulated history and profile.

Built once from the training interactions with sorts and group-bys (linear in interactions), then
drawn per epoch by a torch `DataLoader` over the pairs' permutation (`loader`); with several training
processes (`distributed`) each takes its share of every epoch's permutation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from recsys_tasks.config import FinetuneConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.explain.reasons import liked as liked_mask
from recsys_tasks.protocol.queries import profile_of
from recsys_tasks.text.texts import stated_taste

__all__ = ["Batch", "Batches", "loader"]


class Batch:
    """One step's inputs: the user tower's ``inputs`` (demo, kg, profile, taste, text_on, history, mask),
    the ``targets``' catalog rows, ``liked`` (b, L) 1 where a history item is liked, and per row which
    user (``users``) and where the target is in their sequence (``positions``)."""

    def __init__(self, inputs: tuple, targets: np.ndarray, users: np.ndarray, positions: np.ndarray, liked: np.ndarray):
        self.inputs, self.targets, self.liked = inputs, targets, liked
        self.users, self.positions = users, positions


class Batches:
    """(user, liked item) pairs, each with 0..max_history of the user's earlier items as history
    and sometimes a taste sentence.

    Half the histories are the user's first n items (as a new user's first clicks, the cold-user
    slices), half the n items just before the target (as a returning user's recent items). Each
    user's sequence is a slice of one flat array of catalog rows (``flat``, from ``offsets[u]``).
    ``shard`` (rank, processes): this process's share of every epoch (`order`), the epochs permuted by
    ``order_rng`` (the same draws on every rank; default ``rng``), the histories drawn from ``rng``.
    """

    def __init__(
        self,
        rec,
        train: pd.DataFrame,
        dataset: Dataset,
        cfg: FinetuneConfig,
        threshold: float,
        rng: np.random.Generator,
        shard: tuple[int, int] = (0, 1),
        order_rng: np.random.Generator | None = None,
    ):
        self.cfg, self.rng = cfg, rng
        self.rank, self.processes = shard
        self.order_rng = rng if order_rng is None else order_rng
        ordered = train.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
        codes, users = pd.factorize(ordered["user_id"], sort=True)
        counts = np.bincount(codes, minlength=len(users))
        self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        position = np.arange(len(ordered), dtype=np.int64) - self.offsets[codes]
        self.flat = _catalog_rows(rec, ordered["item_id"])
        # which history items are liked, as serving tells them (`reasons.liked`)
        self.flat_liked = liked_mask(ordered["rating"].to_numpy(), threshold).astype(np.float32)
        profiles = _profiles(dataset, users)
        self.demo = np.array([rec.demographic_rows(p) for p in profiles], dtype=np.int64).reshape(len(users), 3)
        self.kg = np.stack([rec.kg_demo_vector(p) for p in profiles])
        from recsys_tasks.text.texts import profile_text

        self.profile = rec.text_vectors([profile_text(p) for p in profiles])
        is_liked = (ordered["rating"] >= threshold).to_numpy()
        tastes = _tastes(dataset, ordered["item_id"].to_numpy()[is_liked], codes[is_liked], len(users))
        self.taste = rec.text_vectors(tastes)
        self.has_taste = np.array([1.0 if t else 0.0 for t in tastes], dtype=np.float32)
        self.pairs_user = codes[is_liked].astype(np.int64)
        self.pairs_item = self.flat[is_liked]
        self.pairs_position = position[is_liked]
        self.n_pairs = int(is_liked.sum())

    def sequence(self, user: int) -> np.ndarray:
        """A user's catalog rows, oldest first."""
        return self.flat[self.offsets[user] : self.offsets[user] + self.counts(user)]

    def counts(self, user: int) -> int:
        end = self.offsets[user + 1] if user + 1 < len(self.offsets) else len(self.flat)
        return int(end - self.offsets[user])

    def target_counts(self, n_rows: int) -> np.ndarray:
        """How often each catalog row is a training target (n_rows,): the pairs' item popularity."""
        return np.bincount(self.pairs_item, minlength=n_rows)

    def order(self) -> np.ndarray:
        """An epoch's pairs in a fresh random order; with several processes this rank's share of it: every
        ``processes``-th pair, the permutation wrapped round so that every rank has as many (and takes as
        many steps: DistributedDataParallel's collectives need every rank at each step)."""
        order = self.order_rng.permutation(self.n_pairs)
        if self.processes == 1:
            return order
        each = -(-len(order) // self.processes)  # ceil
        return np.resize(order, each * self.processes)[self.rank :: self.processes]  # resize repeats from the start

    def epoch(self) -> Iterator[Batch]:
        """One pass over the pairs (this rank's share) in a fresh random order, ``batch_size`` at a time."""
        order = self.order()
        for start in range(0, len(order), self.cfg.batch_size):
            yield self.batch(order[start : start + self.cfg.batch_size], self.rng)

    def batch(self, idx: np.ndarray, rng: np.random.Generator) -> Batch:
        """The pairs ``idx`` with their histories, profiles and taste sentences drawn from ``rng``."""
        cfg, max_hist = self.cfg, self.cfg.max_history
        users, targets, positions = self.pairs_user[idx], self.pairs_item[idx], self.pairs_position[idx]
        width = max(1, max_hist)
        lengths = rng.integers(1, max_hist + 1, len(idx))
        lengths[rng.random(len(idx)) < cfg.empty_history_prob] = 0  # profile-only users
        recent = rng.random(len(idx)) < 0.5
        if not cfg.truncate_histories:  # ablation: every earlier item (up to max_history)
            lengths, recent = np.where(lengths > 0, max_hist, 0), np.ones(len(idx), bool)
        n = np.minimum(lengths, positions)
        start = self.offsets[users] + np.where(recent, positions - n, 0)
        real = np.arange(width)[None, :] < n[:, None]
        at = np.where(real, start[:, None] + np.arange(width)[None, :], 0)
        hist = np.where(real, self.flat[at], 0).astype(np.int64)
        is_liked = np.where(real, self.flat_liked[at], 0.0).astype(np.float32)
        mask = real.astype(np.float32)
        text_on = (rng.random(len(idx)) < cfg.text_prob).astype(np.float32) * self.has_taste[users]
        demo, kg, profile = self.demo[users], self.kg[users], self.profile[users]
        if cfg.profile_dropout > 0:  # the profile hidden from some users with a history: lean on the history
            hidden = (mask[:, 0] > 0) & (rng.random(len(idx)) < cfg.profile_dropout)
            demo[hidden], kg[hidden], profile[hidden] = 0, 0.0, 0.0
        return Batch((demo, kg, profile, self.taste[users], text_on, hist, mask), targets, users, positions, is_liked)


def loader(batches: Batches, workers: int = 0):
    """A torch `DataLoader` over one epoch of ``batches`` (each item a whole `Batch`): with ``workers``
    0 the batches of `Batches.epoch` in the same order and draws; with more, the epoch's permutation is
    drawn here and each worker builds every ``workers``-th batch from its own seeded generator."""
    import torch
    from torch.utils.data import DataLoader

    # its own generator: a DataLoader draws a base seed per epoch, which must not move torch's global one
    # (the DropoutNet masks and dropout draw from it: the same seed trains the same model as without a loader)
    own = torch.Generator().manual_seed(0)
    # the batches are NumPy arrays, moved to the device by the training step: nothing for the loader to pin
    if workers <= 0:
        return DataLoader(_Epoch(batches), batch_size=None, collate_fn=_as_is, generator=own, pin_memory=False)
    order = batches.order()
    seed = int(batches.rng.integers(2**31))
    return DataLoader(
        _Sharded(batches, order, seed),
        batch_size=None,
        num_workers=workers,
        collate_fn=_as_is,
        generator=own,
        pin_memory=False,
    )


def _as_is(batch: Batch) -> Batch:
    return batch


def _iterable():
    from torch.utils.data import IterableDataset

    return IterableDataset


class _Epoch(_iterable()):  # type: ignore[misc]
    """`Batches.epoch` as a torch IterableDataset (in this process)."""

    def __init__(self, batches: Batches):
        self.batches = batches

    def __iter__(self) -> Iterator[Batch]:
        return self.batches.epoch()


class _Sharded(_iterable()):  # type: ignore[misc]
    """One epoch's ``order`` in batches, every ``num_workers``-th batch built by each worker."""

    def __init__(self, batches: Batches, order: np.ndarray, seed: int):
        self.batches, self.order, self.seed = batches, order, seed

    def __iter__(self) -> Iterator[Batch]:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = np.random.default_rng([self.seed, worker])
        size = self.batches.cfg.batch_size
        for b, start in enumerate(range(0, len(self.order), size)):
            if b % n_workers == worker:
                yield self.batches.batch(self.order[start : start + size], rng)


def _catalog_rows(rec, item_ids: pd.Series) -> np.ndarray:
    """The catalog rows of ``item_ids`` (every one must be in the catalog)."""
    rows = pd.Index(rec.item_ids).get_indexer(item_ids.astype(str))
    if (rows < 0).any():
        missing = item_ids[rows < 0].iloc[0]
        raise ValueError(f"finetune: training item_id {missing!r} is not in the catalog")
    return rows.astype(np.int64)


def _profiles(dataset: Dataset, users: pd.Index) -> list[dict]:
    """The profiles of ``users`` in that order."""
    by_id = {r["user_id"]: r for r in dataset.users.to_dict("records")}
    return [profile_of(by_id[u]) for u in users]


def _tastes(dataset: Dataset, liked_items: np.ndarray, liked_users: np.ndarray, n_users: int) -> list[str]:
    """Each user's stated-taste sentence from the genres of the items they liked ("" where none)."""
    genres = dict(zip(dataset.items["item_id"], dataset.genre_lists()))
    per_user: list[list[list[str]]] = [[] for _ in range(n_users)]
    for u, item in zip(liked_users.tolist(), liked_items.tolist()):
        per_user[u].append(genres[item])
    return [stated_taste(g) or "" for g in per_user]

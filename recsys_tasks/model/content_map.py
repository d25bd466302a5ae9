"""The content-to-collaborative map: a new item gets the vector and bias a warm item with its content has.

A kernel ridge regression from an item's text vector and its catalog fields (genres multi-hot,
release year as a thermometer over the trained items' year quantiles, a year-unknown flag;
``STRUCTURED_SCALE`` times those) to the trained model's ``(v_i, b_i)`` of the items with an ID row:
the inputs go through an RBF kernel against up to ``max_landmarks`` trained items (scikit-learn's
`Nystroem`; gamma ``rbf_scale`` over the median squared distance between trained items' inputs),
then a ridge whose penalty is chosen from ``alphas`` by efficient leave-one-out cross-validation
(`ridge_loo`: scikit-learn's `RidgeCV`, at a fraction of its cost); the Nyström normalisation is folded into the
saved weights, so a map is its landmarks and one matrix. The knobs are `FinetuneConfig`'s ``map_*`` fields.

It replaces the content towers for items without an ID: the towers' KG input is collaborative for
warm items (the graph's like edges) and not for new ones, while text and catalog fields carry no
such skew (docs/decisions/0002-kernel-content-map.md). Maps saved before the kernel (no landmarks)
load and map linearly; maps saved before the catalog fields map from text alone.

A new item's score adds ``profile_weight`` times its text's closeness to the texts of the items the
user liked, in the top ``k`` principal directions of the trained items' text (``profile_basis``), so
a vector index carries k numbers more per item, not the text's 384; weight and k are chosen on
pseudo-new items in finetune (docs/decisions/0003-profile-term.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from recsys_tasks.config import FinetuneConfig

__all__ = ["ContentMap"]

_DEFAULTS = FinetuneConfig()  # the fit's knobs where a caller passes none
FILE = "content_map.npz"
CHUNK_ROWS = 8192  # items mapped at a time (their kernel block: 8192 x landmarks)
# the catalog fields' weight next to the unit-norm text vector (the ridge penalises both alike); part of what a
# saved map means, so fixed here rather than in the config (docs/decisions/0002-kernel-content-map.md)
STRUCTURED_SCALE = 0.3
YEAR_QUANTILES = np.linspace(0, 1, 13)[1:-1]  # the thermometer's edges: these quantiles of the trained items' years


@dataclass(frozen=True)
class ContentMap:
    """``[rbf(x, landmarks), 1] @ weights`` = (vector ⊕ bias) for an item without an ID whose inputs
    are ``x = [text, catalog fields]`` (without landmarks: ``[x, 1] @ weights``, as maps before them)."""

    weights: np.ndarray  # (n_landmarks or n_inputs, + 1, dim + 1) float32, the last row the intercept
    alpha: float
    genres: tuple[str, ...] = ()  # the multi-hot's genres (none: a map from text alone, as bundles before them)
    year_edges: tuple[float, ...] = ()  # the thermometer's edges (with ``genres``, one column more: year unknown)
    landmarks: np.ndarray | None = None  # (n_landmarks, n_inputs) float32: trained items' inputs
    gamma: float = 0.0  # the RBF kernel's exp(-gamma * squared distance)
    profile_weight: float = 0.0  # of the text similarity to the items a user liked, in a new item's score
    profile_basis: np.ndarray | None = None  # (k, text_dim) float32: the similarity is taken in these directions
    profile_center: np.ndarray | None = None  # (text_dim,) float32: ... of the text less this mean
    MIN_ITEMS: ClassVar[int] = 3  # trained items a map needs (leave-one-out CV over fewer says nothing)

    @classmethod
    def fit(
        cls,
        text: np.ndarray,
        vectors: np.ndarray,
        bias: np.ndarray,
        items: pd.DataFrame | None = None,
        *,
        alphas: Sequence[float] = _DEFAULTS.map_alphas,
        rbf_scale: float = _DEFAULTS.map_rbf_scale,
        max_landmarks: int = _DEFAULTS.map_max_landmarks,
    ) -> ContentMap:
        """From the items with an ID: their text vectors (n, t), model vectors (n, d), biases (n,) and,
        where given, catalog rows (``genres`` "|"-joined, ``year``; None: text alone); ``alphas``,
        ``rbf_scale``, ``max_landmarks``: `FinetuneConfig`'s ``map_alphas``, ``map_rbf_scale``,
        ``map_max_landmarks``."""
        if len(text) < cls.MIN_ITEMS:
            raise ValueError(f"content map: {len(text)} trained item(s); at least {cls.MIN_ITEMS} are needed to fit it")
        genres: tuple[str, ...] = ()
        edges: tuple[float, ...] = ()
        if items is not None:
            genres = tuple(sorted(_genre_hot(items).columns))
            years = _years(items)
            known = years[~np.isnan(years)]
            edges = tuple(float(y) for y in np.unique(np.quantile(known, YEAR_QUANTILES))) if len(known) else ()
        from sklearn.kernel_approximation import Nystroem

        x = _inputs(text, items, genres, edges).astype(np.float64)
        gamma = rbf_scale / _median_sq_distance(x)
        nystroem = Nystroem(gamma=gamma, n_components=min(len(x), max_landmarks), random_state=0).fit(x)
        target = np.hstack([vectors, bias.reshape(-1, 1)]).astype(np.float64)
        alpha, coef, intercept = ridge_loo(nystroem.transform(x), target, alphas)
        weights = np.vstack([nystroem.normalization_.T @ coef, intercept.reshape(1, -1)])
        return cls(
            weights.astype(np.float32),
            alpha,
            genres,
            edges,
            nystroem.components_.astype(np.float32),
            float(gamma),
        )

    def __call__(self, text: np.ndarray, items: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (n, d), biases (n,)) for text vectors (n, t) and the items' catalog rows (the map's
        fields: ``genres``, ``year``; needed where the map has fields)."""
        x = _inputs(text, items, self.genres, self.year_edges)
        out = np.empty((len(x), self.weights.shape[1]), np.float32)
        for start in range(0, len(x), CHUNK_ROWS):  # the kernel block of a million items would not fit
            block = x[start : start + CHUNK_ROWS]
            if self.landmarks is not None:
                block = _rbf(block, self.landmarks, self.gamma)
            out[start : start + CHUNK_ROWS] = block @ self.weights[:-1] + self.weights[-1]
        return out[:, :-1], out[:, -1]

    @property
    def text_dim(self) -> int:
        fields = len(self.genres) + len(self.year_edges) + 1 if self.genres or self.year_edges else 0
        inputs = self.landmarks.shape[1] if self.landmarks is not None else self.weights.shape[0] - 1
        return inputs - fields

    def save(self, directory: Path) -> None:
        kernel: dict[str, Any] = (
            {} if self.landmarks is None else {"landmarks": self.landmarks, "gamma": np.float64(self.gamma)}
        )
        profile: dict[str, Any] = (
            {}
            if self.profile_basis is None or self.profile_center is None
            else {"profile_basis": self.profile_basis, "profile_center": self.profile_center}
        )
        np.savez(
            directory / FILE,
            weights=self.weights,
            alpha=np.float64(self.alpha),
            genres=np.array(self.genres, dtype=str),
            year_edges=np.array(self.year_edges, np.float64),
            profile_weight=np.float64(self.profile_weight),
            **kernel,
            **profile,
        )

    def with_profile(self, weight: float, basis: np.ndarray, center: np.ndarray) -> ContentMap:
        """This map with a profile term: ``weight``, over the rows of ``basis`` (k, text_dim), around ``center``."""
        return replace(
            self,
            profile_weight=float(weight),
            profile_basis=np.asarray(basis, np.float32),
            profile_center=np.asarray(center, np.float32),
        )

    @property
    def has_profile(self) -> bool:
        return bool(self.profile_weight) and self.profile_basis is not None and self.profile_center is not None

    def profile(self, text: np.ndarray) -> np.ndarray:
        """(n, k): text vectors (n, text_dim) less the centre, in the basis (a map with a profile term)."""
        if self.profile_basis is None or self.profile_center is None:
            raise ValueError("content map: it has no profile term (no basis and centre); fit one with `with_profile`")
        return (np.asarray(text, np.float32) - self.profile_center) @ self.profile_basis.T

    @classmethod
    def load(cls, directory: Path) -> ContentMap | None:
        """The bundle's map, None for bundles saved before it (their towers serve new items)."""
        path = Path(directory) / FILE
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as data:
            fields = (
                (tuple(str(g) for g in data["genres"]), tuple(float(y) for y in data["year_edges"]))
                if "genres" in data
                else ((), ())
            )  # saved before the catalog fields
            kernel = (
                (data["landmarks"].astype(np.float32), float(data["gamma"])) if "landmarks" in data else (None, 0.0)
            )  # saved before the kernel: linear
            profile = (
                (
                    float(data["profile_weight"]),
                    data["profile_basis"].astype(np.float32),
                    data["profile_center"].astype(np.float32),
                )
                if "profile_basis" in data
                else (0.0, None, None)
            )
            return cls(data["weights"].astype(np.float32), float(data["alpha"]), *fields, *kernel, *profile)


def ridge_loo(
    x: np.ndarray, y: np.ndarray, alphas: Sequence[float], block: int = 8192
) -> tuple[float, np.ndarray, np.ndarray]:
    """Ridge regression of ``y`` (n, m) on ``x`` (n, p) with an unpenalised intercept, its penalty the one of
    ``alphas`` with the least mean squared leave-one-out error (the first of equals): (alpha, coef (p, m),
    intercept (m,)). scikit-learn's `RidgeCV` with n > p, from one eigendecomposition of the centred x'x: each
    penalty costs n*p*(m+1), not RidgeCV's n*p*p, and the rows go ``block`` at a time."""
    x_mean, y_mean = x.mean(0), y.mean(0)
    n = len(x)
    cov = np.zeros((x.shape[1], x.shape[1]))
    xty = np.zeros((x.shape[1], y.shape[1]))
    for start in range(0, n, block):
        xc = x[start : start + block] - x_mean
        cov += xc.T @ xc
        xty += xc.T @ (y[start : start + block] - y_mean)
    eigvals, v = np.linalg.eigh(cov)
    rotated = v.T @ xty  # (p, m)
    shrink = 1.0 / (eigvals[None, :] + np.asarray(alphas, np.float64)[:, None])  # (alphas, p)
    squared = np.zeros(len(alphas))
    for start in range(0, n, block):
        q = (x[start : start + block] - x_mean) @ v
        yc = y[start : start + block] - y_mean
        hat = (q * q) @ shrink.T + 1.0 / n  # (rows, alphas): the hat matrix's diagonal, the intercept's 1/n in it
        for a in range(len(alphas)):
            loo = (yc - q @ (shrink[a][:, None] * rotated)) / (1.0 - hat[:, a : a + 1])
            squared[a] += float(np.square(loo).sum())
    best = int(np.argmin(squared))
    coef = v @ (shrink[best][:, None] * rotated)
    return float(alphas[best]), coef, y_mean - x_mean @ coef


def _inputs(
    text: np.ndarray, items: pd.DataFrame | None, genres: tuple[str, ...], edges: tuple[float, ...]
) -> np.ndarray:
    """The ridge's inputs: the text vectors, then (where the map has them) the catalog fields."""
    text = np.asarray(text, np.float32)
    if not genres and not edges:
        return text
    if items is None or len(items) != len(text):
        raise ValueError(
            f"content map: {len(text)} text vector(s) need as many catalog rows (genres, year); "
            f"got {'none' if items is None else len(items)}"
        )
    years = _years(items)
    fields = np.hstack(
        [
            _genre_hot(items).reindex(columns=list(genres), fill_value=0).to_numpy(np.float32),
            (years[:, None] >= np.array(edges, np.float64)[None, :]).astype(np.float32),  # NaN: all 0
            np.isnan(years).astype(np.float32)[:, None],
        ]
    )
    return np.hstack([text, STRUCTURED_SCALE * fields])


def _rbf(x: np.ndarray, landmarks: np.ndarray, gamma: float) -> np.ndarray:
    """exp(-gamma * |x - landmark|²), (n, n_landmarks) float32: scikit-learn's `rbf_kernel` in float32
    (it computes the distances in float64: slower on a big catalog, for no difference at these scales)."""
    sq = x @ (-2.0 * landmarks.T)
    sq += np.einsum("ij,ij->i", x, x)[:, None]
    sq += np.einsum("ij,ij->i", landmarks, landmarks)[None, :]
    np.maximum(sq, 0.0, out=sq)
    return np.exp(-gamma * sq, out=sq)


def _median_sq_distance(x: np.ndarray, sample: int = 1000) -> float:
    """The median squared distance between the rows of ``x`` (of a seeded sample of ``sample`` rows), 1 if 0."""
    from sklearn.metrics import pairwise_distances

    if len(x) > sample:
        x = x[np.random.default_rng(0).choice(len(x), sample, replace=False)]
    d = pairwise_distances(x, metric="sqeuclidean")[np.triu_indices(len(x), 1)]
    median = float(np.median(d)) if len(d) else 0.0
    return median if median > 0 else 1.0


def _genre_hot(items: pd.DataFrame) -> pd.DataFrame:
    """One 0/1 column per genre named in ``genres`` ("|"-joined; empty or missing: none)."""
    hot = items["genres"].fillna("").astype(str).str.get_dummies(sep="|")
    return hot.drop(columns=[c for c in hot.columns if not c.strip()])


def _years(items: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(items["year"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)

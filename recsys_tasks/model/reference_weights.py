"""The weights of a request's reference items ("something like Alien"), fitted on held-out users.

A request that names an item is ranked by o = r + a·s_text + b·s_model (`intent.reader.SoftWeights`): r the
fused score the model gives the person, s_text and s_model the catalogue's similarity to the named item in text
and in the model's item vectors (standard scores, times the spread of r). Here a and b are chosen on users held
out of training: each asks, as a brand-new user with their profile, for "Something like <title>." of one item
they liked (drawn with the seed), and is scored by NDCG@20 on the rest of what they liked (the named item is
never a candidate, as serving answers). The grid's best pair is kept with the bundle (docs/decisions/
0024-fitted-reference-weights.md).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from recsys_tasks.data.dataset import Dataset
from recsys_tasks.intent.gate import rank_scores
from recsys_tasks.intent.reader import SoftWeights
from recsys_tasks.model.held_out import blocks
from recsys_tasks.model.recommender import Recommender
from recsys_tasks.protocol.metrics import ranking_metrics
from recsys_tasks.protocol.queries import Query, profile_of

log = logging.getLogger(__name__)

__all__ = ["fit_reference_weights", "reference_queries"]


def reference_queries(
    rec: Recommender, dataset: Dataset, held: pd.DataFrame, threshold: float, seed: int
) -> tuple[list[Query], list[int], list[np.ndarray]]:
    """Per held-out user with two or more liked items of which one has a title the parser finds: the request
    "Something like <title>." as a new user (profile, no history), that item's catalogue row, and the rows of
    the other liked items."""
    rng = np.random.default_rng(seed)
    row = pd.Index(rec.bundle.catalog["item_id"].astype(str))
    titles = rec.bundle.catalog["title"].astype(str).to_numpy() if "title" in rec.bundle.catalog else None
    profiles = {str(r["user_id"]): profile_of(r) for r in dataset.users.to_dict("records")}
    liked = held[held["rating"] >= threshold]
    queries: list[Query] = []
    references: list[int] = []
    positives: list[np.ndarray] = []
    if titles is None:
        return queries, references, positives
    for user, items in liked.groupby(liked["user_id"].astype(str), sort=True)["item_id"]:
        rows = row.get_indexer(items.astype(str))
        rows = np.unique(rows[rows >= 0])
        if len(rows) < 2 or user not in profiles:
            continue
        reference = int(rng.choice(rows))
        query = Query(user, profiles[user], (), f"Something like {titles[reference]}.")
        intent = rec.intents.parse(query.text)
        if reference not in set(rec.intents.like_rows(intent).tolist()):
            continue  # the title is not read back as this item (a duplicate title, say): not a clean test
        queries.append(query)
        references.append(reference)
        positives.append(rows[rows != reference])
    return queries, references, positives


def fit_reference_weights(
    rec: Recommender,
    dataset: Dataset,
    held: pd.DataFrame,
    threshold: float,
    seed: int,
    like_grid: Sequence[float],
    model_grid: Sequence[float],
    block: int = 256,
) -> tuple[SoftWeights, dict[str, float]]:
    """The (like, model_like) pair of the grids with the best mean NDCG@20 on `reference_queries` (ties: the
    smaller weights), the other `SoftWeights` field as ``rec`` has it; and a report. With no query, ``rec``'s."""
    queries, references, positives = reference_queries(rec, dataset, held, threshold, seed)
    if not queries:
        return rec.intents.weights, {}
    grid = list(itertools.product(like_grid, model_grid))
    ndcg: dict[tuple[float, float], list[np.ndarray]] = {pair: [] for pair in grid}
    text_dim = int(rec.meta["text_dim"])
    item_text = rec.bundle.item_content[:, :text_dim]
    gate, rec.intent_gate = rec.intent_gate, False  # r: the fused scores before any intent term
    try:
        for part in blocks(len(queries), block):
            raw = rec.score(queries[part])
            candidates = np.ones(raw.shape, bool)
            candidates[np.arange(len(raw)), references[part]] = False
            tiers, parts = [], []
            for q, query in enumerate(queries[part]):
                intent = rec.intents.parse(query.text)
                tiers.append(rec.intents.tiers(intent).tier)
                sentence = rec.text_vectors([str(query.text)])[0]  # the request's vector stands for its free words
                parts.append(
                    rec.intents.soft_parts(
                        intent,
                        raw[q],
                        tiers[-1],
                        rec._unit_item_vectors,
                        _always(sentence),
                        rec.explainer.taste_z,
                        item_text,
                    )
                )
            for like, model in grid:
                scores = np.stack(
                    [
                        rank_scores(raw[q] + like * p.get("like", 0.0) + model * p.get("model_like", 0.0), tiers[q])
                        for q, p in enumerate(parts)
                    ]
                )
                found = ranking_metrics(scores, candidates, positives[part], 20, with_auc=False)["ndcg"]
                ndcg[like, model].append(found)
    finally:
        rec.intent_gate = gate
    means = {pair: float(np.nanmean(np.concatenate(v))) for pair, v in ndcg.items()}
    like, model = max(means, key=lambda pair: (means[pair], -pair[0], -pair[1]))
    before = means.get((rec.intents.weights.like, rec.intents.weights.model_like), float("nan"))
    log.info(
        "reference weights on %d held-out users: NDCG@20 %.4f at the defaults -> %.4f (like %g, model %g)",
        len(queries),
        before,
        means[like, model],
        like,
        model,
    )
    weights = SoftWeights(like=like, model_like=model, text=rec.intents.weights.text)
    return weights, {
        "reference_like_weight": like,
        "reference_model_weight": model,
        "reference_ndcg": means[like, model],
        "reference_ndcg_defaults": before,
        "reference_queries": float(len(queries)),
    }


def _always(vector: np.ndarray) -> Callable[[str], np.ndarray]:
    """A free-text encoder that answers ``vector`` (the request's own, encoded once)."""
    return lambda _free_text: vector

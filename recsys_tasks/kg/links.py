"""Items' shared KG neighbours in plain words, and which relations link items people like together.

A bundle stores `reason_links` (what `explain.reasons` cites: "shares its director with Alien");
the KG stage judges the source's triples with `relation_lift` before it embeds them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

__all__ = ["MIN_PAIRS", "RELATIONS", "RELATION_LIFT", "item_links", "reason_links", "relation_lift"]

RELATION_LIFT = 1.5  # co-liking of linked pairs over random pairs a relation needs (franchises: ~4)
MIN_PAIRS = 50  # linked pairs liked in training below which a relation is not judged (kept)

# Freebase relations (both directions) -> the plain word; relations left out (genre, language,
# country, content rating, nominations, sequels: shared by too many items, or noisy) give no reason.
RELATIONS = {
    "film.film.directed_by": "director",
    "film.director.film": "director",
    "film.film.written_by": "writer",
    "film.writer.film": "writer",
    "film.film.actor": "actor",
    "film.actor.film": "actor",
    "film.film.cinematography": "cinematographer",
    "film.cinematographer.film": "cinematographer",
    "film.film.produced_by": "producer",
    "film.producer.film": "producer",
    "film.film.subjects": "subject",
    "film.film_subject.films": "subject",
    "film.film.production_companies": "production company",
    "film.production_company.films": "production company",
    "film.film.award_won": "award",
}


def item_links(items: pd.DataFrame, kg: pd.DataFrame, relations: Mapping[str, str] | None = RELATIONS) -> pd.DataFrame:
    """(entity_id, relation, value): each item entity's KG neighbours under ``relations`` (relation id
    -> the plain word; None: every relation, under its id), kept only where another item entity has
    the same (relation, value) too."""
    columns = ["entity_id", "relation", "value"]
    entities = set(items.loc[items["entity_id"] != "", "entity_id"]) if "entity_id" in items else set()
    if kg.empty or not entities:
        return pd.DataFrame({c: pd.Series(dtype=str) for c in columns})
    if relations is not None:
        kg = kg[kg["relation_id"].isin(relations)]
    relation = kg["relation_id"] if relations is None else kg["relation_id"].map(relations)
    parts = [
        pd.DataFrame({"entity_id": kg[a], "relation": relation, "value": kg[b]})[kg[a].isin(entities)]
        for a, b in (("head_id", "tail_id"), ("tail_id", "head_id"))
    ]
    links = pd.concat(parts, ignore_index=True).drop_duplicates()
    shared = links.groupby(["relation", "value"])["entity_id"].transform("nunique") >= 2
    return links[shared].sort_values(columns, kind="stable").reset_index(drop=True)[columns]


def reason_links(
    items: pd.DataFrame, kg: pd.DataFrame, train: pd.DataFrame, threshold: float = 4.0
) -> tuple[pd.DataFrame, dict[str, list[float | None]]]:
    """`item_links` less the relations that fail `relation_lift` (what a bundle stores), and
    {relation: [lift (None where undefined), pairs]} for every relation judged (what its metadata reports)."""
    links = item_links(items, kg)
    lifts = (
        relation_lift(
            links, items["item_id"].astype(str).tolist(), items["entity_id"].astype(str).tolist(), train, threshold
        )
        if len(links)
        else {}
    )
    weak = sorted(r for r, (lift, n) in lifts.items() if n >= MIN_PAIRS and not lift >= RELATION_LIFT)
    if weak:
        log.warning(
            "KG relations left out of reasons: the items they link are not liked together more than "
            "random items (lift < %s): %s",
            RELATION_LIFT,
            {r: round(lifts[r][0], 2) for r in weak},
        )
    return (
        links[~links["relation"].isin(weak)].reset_index(drop=True),
        {r: [None if np.isnan(lift) else round(lift, 4), n] for r, (lift, n) in lifts.items()},
    )


def relation_lift(
    links: pd.DataFrame,
    items: Sequence[str],
    entities: Sequence[str],
    histories: pd.DataFrame,
    threshold: float = 4.0,
    sample: int = 5000,
) -> dict[str, tuple[float, int]]:
    """{relation: (lift, pairs)}: how much more often two items sharing a KG value are liked by the
    same training users than two random linked items are (mean cosine of their likers), from up to
    ``sample`` linked pairs per relation and as many random ones (seeded); ``entities``: each
    item's KG entity ("" if none)."""
    import scipy.sparse as sp

    row = {item: r for r, item in enumerate(items)}
    liked = histories[histories["rating"] >= threshold]
    item_rows = liked["item_id"].astype(str).map(row)
    known = item_rows.notna().to_numpy()
    user_codes, _ = pd.factorize(liked["user_id"].astype(str)[known])
    likers = sp.csc_matrix(
        (np.ones(len(user_codes), np.float32), (user_codes, item_rows[known].astype(int))),
        shape=(int(user_codes.max(initial=-1)) + 1, len(items)),
    )
    counts = np.asarray(likers.sum(0)).ravel()

    def colike(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ok = (counts[a] > 0) & (counts[b] > 0) & (a != b)
        a, b = a[ok], b[ok]
        both = np.asarray(likers[:, a].multiply(likers[:, b]).sum(0)).ravel()
        return both / np.sqrt(counts[a] * counts[b])

    entity_row: dict[str, int] = {}
    for r, entity in enumerate(entities):
        if entity:
            entity_row.setdefault(str(entity), r)
    links = links.assign(row=links["entity_id"].map(entity_row)).dropna(subset=["row"])
    links = links.assign(row=links["row"].astype(int))
    rng = np.random.default_rng(0)
    linked = np.unique(links["row"].to_numpy())
    base = colike(rng.choice(linked, sample), rng.choice(linked, sample)) if len(linked) > 1 else np.zeros(0)
    out = {}
    for relation, group in links.groupby("relation", sort=True):
        # One pair per link: its item and a random other item with the same value.
        group = group.sort_values(["value", "row"], kind="stable")
        codes, _ = pd.factorize(group["value"])
        size = np.bincount(codes)[codes]
        start = np.searchsorted(codes, codes)
        partner = start + (np.arange(len(codes)) - start + rng.integers(1, np.maximum(size, 2))) % size
        pick = rng.permutation(len(codes))[:sample]
        rows = group["row"].to_numpy()
        pairs = colike(rows[pick], rows[partner[pick]])
        lift = float(pairs.mean() / base.mean()) if len(pairs) and len(base) and base.mean() > 0 else float("nan")
        out[str(relation)] = (lift, int(len(pairs)))
    return out

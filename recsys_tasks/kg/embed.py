"""Stage 2, kg_embed: a knowledge graph of items, their attributes and demographic values, embedded by PyKEEN.

The graph joins (CKE/KGAT spirit):
- the source's triples, with each Freebase entity linked to an item replaced by the item's node;
- item attributes: ``item:ID --has_genre--> genre:G``, ``item:ID --released_in--> decade:1990s``;
- demographic values: ``gender:F --value_of--> attribute:gender`` for every value a user has (a
  profile is known at sign-up, so cold users' values are fair to use), and ``gender:F --likes-->
  item:ID`` for the items the value's training users like clearly more than all training users do
  (`group_taste_triples`): a new user's demographic nodes sit near the items their groups like;
- ``item:ID --coliked--> item:ID``: each item's most co-liked items, liked within a few places of each
  other in training histories (`colike_triples`).
Every part grows with items and demographic values, not with users. With ``kg.user_entities`` every
user is an entity instead (``user:ID --has_gender/in_age_band/has_occupation--> value``,
``user:ID --liked--> item:ID`` for training positives): docs/decisions/0015-kg-without-user-entities.md.

The source's triples are judged first (`judge_source`): if no relation links items that are liked
together more than random pairs are (``kg.freebase_min_lift``), the links say nothing about these
items and the triples are left out, with a warning. The bundled MovieLens-100K is such a source: its
link file points items at other films (docs/decisions/0001-kg-source-link-lift-gate.md).

PyKEEN ranks each validation and test triple against every entity; both sets are a seeded sample of
at most ``kg.max_eval_triples`` (`eval_ratios`), so early stopping and the reported MRR cost the same
at any size.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_tasks.artifacts import StageResult, atomic_dir, finish, write_json
from recsys_tasks.config import KGConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.split import Split
from recsys_tasks.kg.links import MIN_PAIRS, item_links, relation_lift
from recsys_tasks.kg.nodes import demographic_values

log = logging.getLogger(__name__)

COLUMNS = ["head", "relation", "tail"]


def build_triples(dataset: Dataset, split: Split, cfg: KGConfig, positive_threshold: float) -> pd.DataFrame:
    """All (head, relation, tail) label triples of the graph described in the module doc."""
    parts = [item_attribute_triples(dataset.items)]
    if cfg.include_freebase and len(dataset.kg):
        parts.insert(0, source_triples(dataset.items, dataset.kg))
    train = split.train
    liked = train[train["rating"] >= positive_threshold]
    if cfg.include_demographics:
        values = demographic_values(dataset.users)
        parts.append(
            user_value_triples(values)
            if cfg.user_entities
            else pd.concat([value_triples(values), group_taste_triples(values, train, liked, cfg)])
        )
    if cfg.include_likes:
        parts.append(user_like_triples(liked) if cfg.user_entities else colike_triples(liked, cfg))
    return pd.concat(parts, ignore_index=True)[COLUMNS].drop_duplicates().reset_index(drop=True)


def source_triples(items: pd.DataFrame, kg: pd.DataFrame) -> pd.DataFrame:
    """The source's triples, each entity linked to an item named by the item's node, others ``fb:<id>``."""
    linked = items["entity_id"] != ""
    node = pd.Series(("item:" + items["item_id"].astype(str))[linked].to_numpy(), index=items["entity_id"][linked])
    node = node[~node.index.duplicated()]
    name = lambda column: column.map(node).fillna("fb:" + column.astype(str))  # noqa: E731
    return pd.DataFrame({"head": name(kg["head_id"]), "relation": kg["relation_id"], "tail": name(kg["tail_id"])})


def item_attribute_triples(items: pd.DataFrame) -> pd.DataFrame:
    """``item --has_genre--> genre:G`` per genre, ``item --released_in--> decade:D`` where the year is known."""
    node = "item:" + items["item_id"].astype(str)
    genres = items["genres"].fillna("").astype(str).str.split("|").explode()
    genres = genres[genres != ""]
    year = pd.to_numeric(items["year"], errors="coerce")
    dated = year.notna()
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "head": node.loc[genres.index].to_numpy(),
                    "relation": "has_genre",
                    "tail": ("genre:" + genres).to_numpy(),
                }
            ),
            pd.DataFrame(
                {
                    "head": node[dated].to_numpy(),
                    "relation": "released_in",
                    "tail": [f"decade:{int(y) // 10 * 10}s" for y in year[dated]],
                }
            ),
        ],
        ignore_index=True,
    )


def user_value_triples(values: pd.DataFrame) -> pd.DataFrame:
    """``user:ID --has_<attribute>--> value`` for every user's known demographic values (``kg.user_entities``)."""
    return pd.DataFrame(
        {"head": "user:" + values["user_id"], "relation": "has_" + values["attribute"], "tail": values["node"]}
    )


def user_like_triples(liked: pd.DataFrame) -> pd.DataFrame:
    """``user:ID --liked--> item:ID`` for every training positive (``kg.user_entities``)."""
    return pd.DataFrame(
        {
            "head": "user:" + liked["user_id"].astype(str),
            "relation": "liked",
            "tail": "item:" + liked["item_id"].astype(str),
        }
    )


def value_triples(values: pd.DataFrame) -> pd.DataFrame:
    """``value --value_of--> attribute:A`` once per demographic value any user has: every value is an entity."""
    distinct = values.drop_duplicates("node")
    return pd.DataFrame(
        {"head": distinct["node"], "relation": "value_of", "tail": "attribute:" + distinct["attribute"]}
    )


def group_taste_triples(values: pd.DataFrame, train: pd.DataFrame, liked: pd.DataFrame, cfg: KGConfig) -> pd.DataFrame:
    """``value --likes--> item``: per demographic value, the ``cfg.group_top_n`` items with the highest lift, where
    lift = (the share of the value's training users who like the item) / (the share of all training users who do),
    at least ``cfg.group_min_lift``, liked by at least ``cfg.group_min_support`` of the value's users."""
    scores = group_lifts(values, train, liked)
    keep = scores[(scores["support"] >= cfg.group_min_support) & (scores["lift"] >= cfg.group_min_lift)]
    keep = keep.sort_values(["node", "lift", "support", "item_id"], ascending=[True, False, False, True], kind="stable")
    top = keep.groupby("node", sort=False).head(cfg.group_top_n)
    return pd.DataFrame(
        {"head": top["node"].to_numpy(), "relation": "likes", "tail": ("item:" + top["item_id"]).to_numpy()}
    )


def group_lifts(values: pd.DataFrame, train: pd.DataFrame, liked: pd.DataFrame) -> pd.DataFrame:
    """(node, item_id, support, lift) for every demographic value and item one of the value's training users likes."""
    users = pd.Index(pd.unique(train["user_id"].astype(str)))  # training users: the denominators
    pairs = liked[["user_id", "item_id"]].astype(str).drop_duplicates()
    user_row = users.get_indexer(pairs["user_id"])
    item_code, item_ids = pd.factorize(pairs["item_id"])
    item_rate = np.bincount(item_code, minlength=len(item_ids)) / max(len(users), 1)
    values = values[values["user_id"].isin(users)]
    node_code, nodes = pd.factorize(values["node"])
    group_size = np.bincount(node_code, minlength=len(nodes))
    out = []
    for _, rows in values.assign(code=node_code).groupby("attribute", sort=True):
        user_node = np.full(len(users), -1, np.int64)
        user_node[users.get_indexer(rows["user_id"])] = rows["code"].to_numpy()
        node = user_node[user_row]
        has = node >= 0
        key = node[has] * len(item_ids) + item_code[has]
        keys, support = np.unique(key, return_counts=True)
        g, i = keys // len(item_ids), keys % len(item_ids)
        out.append(
            pd.DataFrame(
                {
                    "node": nodes[g],
                    "item_id": item_ids[i],
                    "support": support,
                    "lift": support / group_size[g] / item_rate[i],
                }
            )
        )
    columns = {"node": str, "item_id": str, "support": np.int64, "lift": np.float64}
    return (
        pd.concat(out, ignore_index=True) if out else pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
    )


def colike_triples(liked: pd.DataFrame, cfg: KGConfig) -> pd.DataFrame:
    """``item --coliked--> item``: each item's ``cfg.colike_top_k`` partners by ``colike_counts``' cosine, from pairs
    co-liked by at least ``cfg.colike_min_support`` users."""
    pairs = colike_counts(liked, cfg.colike_window)
    pairs = pairs[pairs["support"] >= cfg.colike_min_support]
    both = pd.concat([pairs, pairs.rename(columns={"a": "b", "b": "a"})], ignore_index=True).sort_values(
        ["a", "cosine", "support", "b"], ascending=[True, False, False, True], kind="stable"
    )
    top = both.groupby("a", sort=False).head(cfg.colike_top_k)
    return pd.DataFrame(
        {"head": ("item:" + top["a"]).to_numpy(), "relation": "coliked", "tail": ("item:" + top["b"]).to_numpy()}
    )


def colike_counts(liked: pd.DataFrame, window: int) -> pd.DataFrame:
    """(a, b, support, cosine) per unordered item pair (a < b by first appearance): how many users liked both within
    ``window`` places of each other in their history (timestamp order), and support / sqrt(likers(a) likers(b)).
    Linear in positives: ``window`` partners per like."""
    ordered = liked[["user_id", "item_id", "timestamp"]].astype({"user_id": str, "item_id": str})
    ordered = ordered.drop_duplicates(["user_id", "item_id"]).sort_values(
        ["user_id", "timestamp", "item_id"], kind="stable"
    )
    user = pd.factorize(ordered["user_id"])[0]
    item, item_ids = pd.factorize(ordered["item_id"])
    likers = np.bincount(item, minlength=len(item_ids))
    n = np.int64(len(item_ids))
    keys = []
    for d in range(1, max(window, 0) + 1):
        same = user[d:] == user[:-d]
        a, b = item[:-d][same], item[d:][same]
        keys.append(np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b))
    key, support = np.unique(np.concatenate(keys) if keys else np.zeros(0, np.int64), return_counts=True)
    a, b = key // max(n, 1), key % max(n, 1)
    return pd.DataFrame(
        {
            "a": item_ids[a] if len(a) else pd.Series(dtype=str),
            "b": item_ids[b] if len(b) else pd.Series(dtype=str),
            "support": support,
            "cosine": support / np.sqrt(likers[a] * likers[b]),
        }
    )


def eval_ratios(n_triples: int, cfg: KGConfig) -> list[float]:
    """PyKEEN split ratios (training, validation, testing): ``cfg.eval_fraction`` each for validation and testing,
    at most ``cfg.max_eval_triples`` triples each (0: no cap)."""
    frac = cfg.eval_fraction
    if cfg.max_eval_triples > 0 and n_triples > 0:
        frac = min(frac, cfg.max_eval_triples / n_triples)
    return [1 - 2 * frac, frac, frac]


def kg_embed(
    cfg: KGConfig, snapshot_dir: str | Path, out_dir: str | Path, positive_threshold: float = 4.0
) -> StageResult:
    """Train ``cfg.model`` with PyKEEN's pipeline (early stopping on validation) and save embeddings.

    Writes ``embeddings.npy`` (n_entities x dim, float32) and ``entities.parquet`` (label, row).
    """
    import torch
    from pykeen.pipeline import pipeline
    from pykeen.triples import TriplesFactory

    dataset, split = Dataset.load(snapshot_dir), Split.load(snapshot_dir)
    cfg, verdict, lifts = judge_source(cfg, dataset.items, dataset.kg, split.train, positive_threshold)
    triples = build_triples(dataset, split, cfg, positive_threshold)
    factory = TriplesFactory.from_labeled_triples(triples[COLUMNS].to_numpy(dtype=str))
    training, validation, testing = factory.split(eval_ratios(len(triples), cfg), random_state=cfg.seed)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    # The early stopper keeps its best weights in a file (by default under ~/.data/pykeen) and leaves
    # it there when training ends without stopping early: keep that file in a scratch folder.
    with tempfile.TemporaryDirectory(prefix="kg_embed-") as scratch:
        result = pipeline(
            training=training,
            validation=validation,
            testing=testing,
            model=cfg.model,
            model_kwargs={"embedding_dim": cfg.embedding_dim},
            optimizer="Adam",
            optimizer_kwargs={"lr": cfg.learning_rate},
            negative_sampler="basic",
            negative_sampler_kwargs={"num_negs_per_pos": cfg.num_negs_per_pos},
            training_kwargs={"num_epochs": cfg.epochs, "batch_size": cfg.batch_size, "use_tqdm_batch": False},
            stopper="early",
            stopper_kwargs={
                "frequency": cfg.early_stopping_frequency,
                "patience": cfg.early_stopping_patience,
                "metric": "inverse_harmonic_mean_rank",
                "relative_delta": 0.002,
                "evaluation_batch_size": 128,
                "best_model_path": Path(scratch) / "best-model-weights.pt",
            },
            evaluation_kwargs={"batch_size": 128},
            random_seed=cfg.seed,
            device=device,
            use_tqdm=True,
        )
    embeddings = _entity_matrix(result.model)
    labels = sorted(training.entity_to_id, key=training.entity_to_id.get)
    metrics = {
        "mrr": float(result.metric_results.get_metric("both.realistic.inverse_harmonic_mean_rank")),
        "hits_at_10": float(result.metric_results.get_metric("both.realistic.hits_at_10")),
        "n_triples": float(len(triples)),
        "n_entities": float(len(labels)),
        "n_relations": float(training.num_relations),
        "n_eval_triples": float(validation.num_triples + testing.num_triples),
        "epochs_trained": float(len(result.losses)),
        "final_loss": float(result.losses[-1]) if result.losses else float("nan"),
        "train_seconds": float(result.train_seconds),
        "source_triples": float(len(dataset.kg)) if cfg.include_freebase else 0.0,
        **({"source_link_lift": max(judged)} if (judged := _judged(lifts)) else {}),
    }
    log.info("kg_embed: %s", metrics)
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / "embeddings.npy", embeddings)
        pd.DataFrame({"label": labels}).to_parquet(tmp / "entities.parquet", index=False)
        triples.to_parquet(tmp / "triples.parquet", index=False)
        write_json(tmp / "losses.json", [float(x) for x in result.losses])
        write_json(
            tmp / "link_lifts.json",
            {
                r: {"lift": None if np.isnan(lift) else round(lift, 4), "pairs": pairs}
                for r, (lift, pairs) in sorted(lifts.items())
            },
        )
        artifacts = {
            "embeddings": str(tmp / "embeddings.npy"),
            "entities": str(tmp / "entities.parquet"),
            "triples": str(tmp / "triples.parquet"),
            "losses": str(tmp / "losses.json"),
            "link_lifts": str(tmp / "link_lifts.json"),
        }
        return finish(
            StageResult(
                "kg_embed",
                str(Path(out_dir)),
                artifacts,
                metrics,
                {"model": cfg.model, "dim": int(embeddings.shape[1]), "source_triples": verdict},
            ),
            tmp,
        )


def judge_source(
    cfg: KGConfig, items: pd.DataFrame, kg: pd.DataFrame, train: pd.DataFrame, positive_threshold: float = 4.0
) -> tuple[KGConfig, str, dict[str, tuple[float, int]]]:
    """Whether the source's triples enter the graph: (``cfg``, with ``include_freebase`` off where they
    fail the check; the verdict: kept, kept (not judged), left out, off or none; {relation id: (lift,
    pairs)}, `reasons.relation_lift` over every relation that links items)."""
    if not cfg.include_freebase or kg.empty:
        return cfg, "off" if not cfg.include_freebase else "none", {}
    links = item_links(items, kg, relations=None)
    lifts = (
        relation_lift(
            links,
            items["item_id"].astype(str).tolist(),
            items["entity_id"].astype(str).tolist(),
            train,
            positive_threshold,
        )
        if len(links)
        else {}
    )
    judged = _judged(lifts)
    if not judged:
        return cfg, "kept (not judged)", lifts
    if cfg.freebase_min_lift > 0 and max(judged) < cfg.freebase_min_lift:
        log.warning(
            "kg_embed: the source's %d triples are left out of the graph: no relation links items liked "
            "together %.2g times as often as random pairs (kg.freebase_min_lift; 0 keeps them): %s",
            len(kg),
            cfg.freebase_min_lift,
            {r: round(lift, 2) for r, (lift, n) in sorted(lifts.items()) if n >= MIN_PAIRS},
        )
        return dataclasses.replace(cfg, include_freebase=False), "left out", lifts
    return cfg, "kept", lifts


def _judged(lifts: dict[str, tuple[float, int]]) -> list[float]:
    """The lifts of the relations with enough pairs to judge."""
    return [float(lift) for lift, pairs in lifts.values() if pairs >= MIN_PAIRS and not np.isnan(lift)]


def _entity_matrix(model) -> np.ndarray:
    """Entity representations as real float32 rows (complex models such as RotatE are split into re/im)."""
    import torch

    with torch.no_grad():
        emb = model.entity_representations[0](indices=None).detach().cpu()
    if emb.is_complex():
        emb = torch.view_as_real(emb).flatten(start_dim=1)
    return emb.reshape(emb.shape[0], -1).numpy().astype(np.float32)


def load_entity_embeddings(kg_dir: str | Path) -> tuple[dict[str, int], np.ndarray]:
    kg_dir = Path(kg_dir)
    labels = pd.read_parquet(kg_dir / "entities.parquet")["label"].tolist()
    return {label: i for i, label in enumerate(labels)}, np.load(kg_dir / "embeddings.npy")

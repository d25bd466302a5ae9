"""Stage 2, kg_embed: a knowledge graph of items, users and their attributes, embedded by PyKEEN.

The graph joins (CKE/KGAT spirit):
- the source's triples, with each Freebase entity linked to an item replaced by the item's node;
- item attributes: ``item:ID --has_genre--> genre:G``, ``item:ID --released_in--> decade:1990s``;
- user demographics: ``user:ID --has_gender/in_age_band/has_occupation--> value`` (for every
  user: a profile is known at sign-up, so cold users' demographics are fair to use);
- ``user:ID --liked--> item:ID`` for training interactions with a positive rating only.
Demographic values are entities, so a user never seen in training still maps into the space.

The source's triples are judged first (`judge_source`): if no relation links items that are liked
together more than random pairs are (``kg.freebase_min_lift``), the links say nothing about these
items and the triples are left out, with a warning. The bundled MovieLens-100K is such a source: its
link file points items at other films (docs/decisions/0001-kg-source-link-lift-gate.md).
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
from recsys_tasks.kg.nodes import demographic_nodes, item_node

log = logging.getLogger(__name__)


def build_triples(dataset: Dataset, split: Split, cfg: KGConfig, positive_threshold: float) -> pd.DataFrame:
    """All (head, relation, tail) label triples of the graph described in the module doc."""
    items = dataset.items
    parts: list[pd.DataFrame] = []
    if cfg.include_freebase and len(dataset.kg):
        linked = dict(
            zip(items.loc[items["entity_id"] != "", "entity_id"], items.loc[items["entity_id"] != "", "item_id"])
        )
        node = lambda e: item_node(linked[e]) if e in linked else f"fb:{e}"  # noqa: E731
        parts.append(
            pd.DataFrame(
                {
                    "head": dataset.kg["head_id"].map(node),
                    "relation": dataset.kg["relation_id"],
                    "tail": dataset.kg["tail_id"].map(node),
                }
            )
        )
    genre_rows = [
        (item_node(i), "has_genre", f"genre:{g}")
        for i, gs in zip(items["item_id"], items["genres"])
        for g in (gs.split("|") if gs else [])
    ]
    decade_rows = [
        (item_node(i), "released_in", f"decade:{int(y) // 10 * 10}s")
        for i, y in zip(items["item_id"], items["year"])
        if not pd.isna(y)
    ]
    parts.append(pd.DataFrame(genre_rows + decade_rows, columns=["head", "relation", "tail"]))
    if cfg.include_demographics:
        rows = []
        for user in dataset.users.to_dict("records"):
            for value in demographic_nodes(user):
                rows.append((f"user:{user['user_id']}", f"has_{value.split(':')[0]}", value))
        parts.append(pd.DataFrame(rows, columns=["head", "relation", "tail"]))
    if cfg.include_likes:
        liked = split.train[split.train["rating"] >= positive_threshold]
        parts.append(
            pd.DataFrame(
                {"head": "user:" + liked["user_id"], "relation": "liked", "tail": liked["item_id"].map(item_node)}
            )
        )
    triples = pd.concat(parts, ignore_index=True).drop_duplicates().reset_index(drop=True)
    return triples


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
    factory = TriplesFactory.from_labeled_triples(triples[["head", "relation", "tail"]].to_numpy(dtype=str))
    frac = cfg.eval_fraction
    training, validation, testing = factory.split([1 - 2 * frac, frac, frac], random_state=cfg.seed)
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

"""Stage 4, finetune: start from the text and KG representations, fit the hybrid on interactions.

Transfer learning in the DropoutNet/MeLU spirit: the item tower starts from frozen BERT and
PyKEEN features, so a new item is ranked by content alone; training hides item IDs at random
(``id_dropout``) and gives each user a random 0..``max_history`` subset of their history, and
sometimes a stated-taste sentence, so the weights learn to serve every cold-start case.
Loss: softmax cross-entropy over all training items, past ``negatives`` of them a log-Q corrected
sampled softmax (`training`, docs/decisions/0013-sampled-softmax.md), on batches built in `batches`;
AdamW; early stopping on pseudo-cold validation users (held out of training, `held_out`) by NDCG@20;
then (``id_epochs``) the item IDs alone go on, the towers frozen, while the same users' cold and warm
validation improves; fixed seeds. Past one process (``processes``, ``nnodes``) the same training runs
data-parallel under torchrun, DistributedDataParallel on each rank's share of the batches (`distributed`).
Last, the trained model is completed for serving: items without an ID get the content map's
vectors (`content_map`), with its weight of the text similarity to a user's liked items chosen on
pseudo-new items (`_profile_weight`), and the scores are fused with a popularity prior and EASE,
the weights chosen on a second group of held-out users, the fusion users (`fusion`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recsys_tasks.artifacts import StageResult, atomic_dir, finish, read_json
from recsys_tasks.config import FinetuneConfig
from recsys_tasks.data.dataset import AGE_BANDS, Dataset
from recsys_tasks.data.split import Split
from recsys_tasks.kg.embed import load_entity_embeddings
from recsys_tasks.kg.links import reason_links
from recsys_tasks.kg.nodes import demographic_nodes, item_node
from recsys_tasks.model.batches import Batches, loader
from recsys_tasks.model.bundle import HistoryIndex
from recsys_tasks.model.content_map import ContentMap
from recsys_tasks.model.early_stopping import EarlyStopping
from recsys_tasks.model.held_out import (
    blocks,
    fusion_queries,
    held_out_users,
    unseen,
    validate,
    validation_queries,
)
from recsys_tasks.model.precision import autocast, step_dtype
from recsys_tasks.model.recommender import Bundle, Recommender
from recsys_tasks.model.reference_weights import fit_reference_weights
from recsys_tasks.model.training import StepLoss
from recsys_tasks.plots import curves_chart
from recsys_tasks.protocol.metrics import ranking_metrics
from recsys_tasks.protocol.queries import Query, history_of, profile_of
from recsys_tasks.text.texts import stated_taste

if TYPE_CHECKING:
    from recsys_tasks.model.distributed import Ranks

log = logging.getLogger(__name__)


def finetune(
    cfg: FinetuneConfig,
    snapshot_dir: str | Path,
    kg_dir: str | Path,
    text_dir: str | Path,
    out_dir: str | Path,
    text_model: str,
    positive_threshold: float = 4.0,
) -> StageResult:
    """Train the hybrid model and write its bundle (see `recommender`) plus training curves; past one process
    (``cfg.processes`` or ``cfg.nnodes``) under torchrun (`distributed.launch`)."""
    if cfg.processes > 1 or cfg.nnodes > 1:
        from recsys_tasks.model.distributed import launch

        return launch(cfg, snapshot_dir, kg_dir, text_dir, out_dir, text_model, positive_threshold)
    result = train(cfg, snapshot_dir, kg_dir, text_dir, out_dir, text_model, positive_threshold)
    assert result is not None  # (one process: rank 0)
    return result


def train(
    cfg: FinetuneConfig,
    snapshot_dir: str | Path,
    kg_dir: str | Path,
    text_dir: str | Path,
    out_dir: str | Path,
    text_model: str,
    positive_threshold: float = 4.0,
    ranks: Ranks | None = None,
) -> StageResult | None:
    """`finetune` in this process: alone (``ranks`` None), or as one rank of a torchrun group, which trains on
    its share of the batches and returns None, rank 0 alone writing the output."""
    import torch

    from recsys_tasks.model.hybrid import HybridModel, save_model

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    dataset, split = Dataset.load(snapshot_dir), Split.load(snapshot_dir)
    bundle = build_bundle(dataset, split, kg_dir, text_dir, text_model, cfg.max_history, positive_threshold)
    # the known users' histories as arrays, as a saved bundle serves them (not grouped into a dict of tuples)
    bundle.history_index = HistoryIndex.build(bundle.histories, bundle.catalog["item_id"].astype(str).tolist())
    device = (
        ranks.device
        if ranks is not None
        else torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    )
    train = split.train
    if train.empty:
        raise ValueError("finetune: the split's training part is empty; nothing to learn from")
    val_users, fusion_users = held_out_users(
        train,
        cfg.validation_user_frac,
        cfg.fusion_user_frac if cfg.fusion else 0.0,
        rng,
        cfg.max_validation_users,
        cfg.max_fusion_users,
    )
    fit = train[~train["user_id"].isin(val_users | fusion_users)]

    spec = model_spec(bundle, cfg)
    model = HybridModel(spec).to(device)
    rec = Recommender(bundle, model, device.type)
    if ranks is None:
        batches = Batches(rec, fit, dataset, cfg, positive_threshold, rng)
    else:  # the epochs' order from the shared draws, this rank's histories from its own
        own = np.random.default_rng(ranks.seed(cfg.seed))
        batches = Batches(rec, fit, dataset, cfg, positive_threshold, own, (ranks.rank, ranks.world), rng)
    validation = validation_queries(
        rec, dataset, train[train["user_id"].isin(val_users)], positive_threshold, cfg.validation_support
    )

    id_params = [model.item_id.weight, model.item_id_bias.weight]  # what only warm items use: may learn faster
    towers = [p for p in model.parameters() if all(p is not q for q in id_params)]
    id_lr = cfg.id_learning_rate or cfg.learning_rate
    step_loss = StepLoss(
        bundle.item_content,
        bundle.catalog["id_row"].to_numpy(),
        spec.n_id_items,
        batches.target_counts(len(bundle.catalog)),
        negatives=cfg.negatives,
        alpha=cfg.negative_alpha,
        id_dropout=cfg.id_dropout,
        seed=cfg.seed if ranks is None else ranks.seed(cfg.seed),
        device=device,
        history_refresh=cfg.history_refresh,
    )
    # the step, the epoch's mean loss, the validation and the steps per round: this process's, or with
    # several ranks synchronised gradients, the mean over ranks, rank 0's validation and each rank's share
    step: Callable[[Any], Any] = functools.partial(step_loss, model)
    mean_loss: Callable[[list[float]], float] = lambda losses: float(np.mean(losses))  # noqa: E731
    shared: Callable[[Callable[[], dict[str, float]]], dict[str, float]] = lambda compute: compute()  # noqa: E731
    steps_per_round = cfg.steps_per_epoch
    if ranks is not None:
        step, mean_loss, shared = ranks.wrap(model, step_loss), ranks.mean, ranks.from_rank0
        steps_per_round = ranks.share(cfg.steps_per_epoch)
        torch.manual_seed(ranks.seed(cfg.seed))  # this rank's DropoutNet masks (the weights are rank 0's)
    dtype = step_dtype(cfg.precision, device)
    log.info("finetune: the step's matrix products in %s on %s", dtype, device)
    if step_loss.sampled:
        log.info(
            "finetune: sampled softmax, %d negatives per step of %d trainable items", cfg.negatives, spec.n_id_items
        )
    curves: list[dict[str, float]] = []
    start = time.perf_counter()

    def run_epochs(
        optimizer,
        epochs: int,
        score: Callable[[dict[str, float]], float],
        patience: int,
        keep_current: bool = False,
    ) -> dict[str, float]:
        """Up to ``epochs`` epochs, early-stopped on ``score`` of the validation (`EarlyStopping`, ``patience`` and
        ``cfg.min_gain``); the best state kept, its validation returned (``keep_current``: the model as it is
        competes too, so training can only improve the score)."""
        stopping, best_val, best_state = EarlyStopping(patience, cfg.min_gain), {}, None
        if keep_current:
            best_val = shared(lambda: validate(rec, validation, cfg.score_block))
            stopping.start(score(best_val))
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for _ in range(epochs):
            model.train()
            losses = []
            for number, batch in enumerate(loader(batches, cfg.loader_workers)):
                if steps_per_round and number >= steps_per_round:  # a round of a large data set
                    break
                with autocast(dtype, device):
                    loss = step(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            model.eval()
            rec.refresh()
            val = shared(lambda: validate(rec, validation, cfg.score_block))
            curves.append({"epoch": len(curves) + 1, "steps": float(len(losses)), "loss": mean_loss(losses), **val})
            log.info("finetune epoch %d: loss %.4f val %s", len(curves), curves[-1]["loss"], val)
            better, stop = stopping.update(score(val))
            if better:
                best_val = val
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if stop:
                break
        model.load_state_dict(best_state)
        model.eval()
        rec.refresh()
        return best_val

    # 1. everything, early-stopped on the pseudo-cold users (what the towers must serve)
    groups: list[dict[str, Any]] = [{"params": towers}, {"params": id_params, "lr": id_lr}]
    kept = run_epochs(
        torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay),
        cfg.epochs,
        lambda val: val["val_ndcg"],
        cfg.patience,
    )
    stage_one = len(curves)
    # 2. the item IDs only, the towers frozen: warm items go on learning while the cold and warm
    # validation together improve
    if cfg.id_epochs and any(queries for _, queries, _ in validation):
        both = lambda val: float(np.mean([v for k, v in val.items() if k != "val_ndcg"]))  # noqa: E731
        # in one process the towers stop computing gradients and the content comes from one table (the same
        # arithmetic, a fraction of the cost); a data-parallel group keeps every parameter in the graph, as its
        # DistributedDataParallel module expects
        frozen = ranks is None
        if frozen:
            for p in towers:
                p.requires_grad_(False)
            step_loss.freeze(model)
        kept = run_epochs(
            torch.optim.AdamW(id_params, lr=id_lr, weight_decay=cfg.weight_decay),
            cfg.id_epochs,
            both,
            cfg.id_patience,
            keep_current=True,
        )
        if frozen:
            step_loss.thaw()
            for p in towers:
                p.requires_grad_(True)
    info: dict[str, Any] = {"device": device.type, "step_dtype": str(dtype).removeprefix("torch.")}
    if ranks is not None:  # one model on every rank, checked; what follows is rank 0's
        info |= ranks.one_model(model)
        if ranks.rank != 0:
            return None
    # 3. serving's completions: new items from their text, and the fusion
    map_report: dict[str, float] = {}
    if cfg.content_map and int(rec.meta["n_id_items"]) >= ContentMap.MIN_ITEMS:  # (fewer: the towers serve)
        content_map = _content_map(rec, cfg)
        held_out = split.train[split.train["user_id"].isin(val_users | fusion_users)]
        weight, basis, center, map_report = _profile_weight(rec, dataset, held_out, positive_threshold, cfg)
        rec.set_content_map(content_map.with_profile(weight, basis, center))
    fusion_report: dict[str, Any] = {}
    if cfg.fusion:
        tuners = fusion_users or val_users  # none of its own: the early-stopping users
        held = split.train[split.train["user_id"].isin(tuners)]
        fusion_report = _fuse(rec, fit, dataset, held, val_users | fusion_users, cfg, positive_threshold)
        if "fusion_ease_skipped" in fusion_report:
            info["ease_skipped"] = str(fusion_report.pop("fusion_ease_skipped"))
    # 4. a request's reference items ("something like Alien"): their weights fitted on the held-out users, applied
    # only with `fit_reference_weights` (the fit trades what the request asks for against relevance: 0024)
    tuners = fusion_users or val_users
    fitted, reference_report = fit_reference_weights(
        rec,
        dataset,
        split.train[split.train["user_id"].isin(tuners)],
        positive_threshold,
        cfg.seed,
        cfg.reference_like_grid,
        cfg.reference_model_grid,
        cfg.score_block,
    )
    if cfg.fit_reference_weights:
        rec.intents.weights = fitted
    reference_report["reference_weights_applied"] = float(cfg.fit_reference_weights and bool(reference_report))
    bundle.meta["intent_weights"] = dataclasses.asdict(rec.intents.weights)
    seconds = time.perf_counter() - start
    metrics = {
        "val_ndcg": kept["val_ndcg"],
        "epochs_trained": float(stage_one),
        "steps_trained": float(sum(c["steps"] for c in curves)),
        "id_epochs_trained": float(len(curves) - stage_one),
        "train_seconds": seconds,
        "seconds_per_epoch": seconds / max(1, len(curves)),
        "final_loss": curves[-1]["loss"],
        "n_train_pairs": float(batches.n_pairs),
        "n_validation_users": float(len(val_users)),
        "n_fusion_users": float(len(fusion_users)),
        "sampled_softmax": float(step_loss.sampled),
        "ease_skipped": float("ease_skipped" in info),
        "disliked_weight": float(model.disliked_log_weight.detach().exp()),
        **map_report,
        **fusion_report,
        **reference_report,
    }
    with atomic_dir(out_dir) as tmp:
        bundle_dir = tmp / "bundle"
        bundle_dir.mkdir()
        bundle.meta["finetune"] = {**cfg.__dict__, "device": device.type}
        bundle.save(bundle_dir)
        save_model(model, bundle_dir / "model.pt")
        pd.DataFrame(curves).to_csv(tmp / "curves.csv", index=False)
        curves_chart(pd.DataFrame(curves), tmp / "curves.png")
        artifacts = {
            "bundle": str(bundle_dir),
            "curves": str(tmp / "curves.csv"),
            "curves_chart": str(tmp / "curves.png"),
        }
        log.info("finetune: %s", metrics)
        return finish(StageResult("finetune", str(Path(out_dir)), artifacts, metrics, info), tmp)


def model_spec(bundle: Bundle, cfg: FinetuneConfig):
    """The hybrid model's shapes for ``bundle``'s inputs and ``cfg``'s sizes (a `hybrid.ModelSpec`)."""
    from recsys_tasks.model.hybrid import ModelSpec

    return ModelSpec(
        content_dim=bundle.item_content.shape[1],
        text_dim=bundle.text_vectors.shape[1],
        kg_dim=bundle.meta["kg_dim"],
        n_id_items=bundle.meta["n_id_items"],
        n_genders=len(bundle.meta["vocab"]["gender"]),
        n_ages=len(bundle.meta["vocab"]["age"]),
        n_occupations=len(bundle.meta["vocab"]["occupation"]),
        dim=cfg.dim,
        hidden=cfg.hidden,
        inputs=tuple(cfg.inputs),
    )


def build_bundle(
    dataset: Dataset,
    split: Split,
    kg_dir: str | Path,
    text_dir: str | Path,
    text_model: str,
    max_history: int,
    positive_threshold: float = 4.0,
) -> Bundle:
    """Join the snapshot with the KG and text stages' outputs into serving-ready arrays (and the
    items' shared KG links, which reasons name). Where text_embed adapted the encoder (`text.adapt`), that
    encoder, not ``text_model``, made the vectors: the bundle carries it."""
    from recsys_tasks.text.embed import adapted_encoder

    adapted = adapted_encoder(text_dir)
    entity_row, entity_vecs = load_entity_embeddings(kg_dir)
    entity_vecs = _unit_rows(entity_vecs)
    kg_dim = entity_vecs.shape[1]
    text_items = np.load(Path(text_dir) / "items.npy")
    texts = read_json(Path(text_dir) / "texts.json")
    kg_items = _rows_or_zeros(entity_vecs, [entity_row.get(item_node(i), -1) for i in dataset.items["item_id"]])
    trained = set(split.train["item_id"])
    catalog = dataset.items.copy()
    is_trained = catalog["item_id"].isin(trained).to_numpy()
    id_row = np.full(len(catalog), int(is_trained.sum()), dtype=np.int64)  # "no ID" row last
    id_row[is_trained] = np.arange(int(is_trained.sum()))
    catalog["id_row"] = id_row
    users = dataset.users
    vocab = {
        "gender": sorted(set(users["gender"]) - {""}),
        "age": list(AGE_BANDS),
        "occupation": sorted(set(users["occupation"]) - {""}),
    }
    demo_labels = {n for p in users.to_dict("records") for n in demographic_nodes(p)}
    kg_demo = {n: entity_vecs[entity_row[n]] for n in demo_labels if n in entity_row}
    sentences = list(dict.fromkeys(texts["users"] + texts["tastes"]))
    user_vecs, taste_vecs = np.load(Path(text_dir) / "users.npy"), np.load(Path(text_dir) / "tastes.npy")
    lookup = dict(zip(texts["users"], user_vecs)) | dict(zip(texts["tastes"], taste_vecs))
    meta = {
        "text_model": adapted or text_model,
        "text_encoder_in_bundle": adapted is not None,
        "kg_dim": int(kg_dim),
        "text_dim": int(text_items.shape[1]),
        "n_id_items": int(is_trained.sum()),
        "vocab": vocab,
        "max_history": int(max_history),
        "positive_threshold": float(positive_threshold),
    }
    links, meta["relation_lift"] = reason_links(dataset.items, dataset.kg, split.train, positive_threshold)
    return Bundle(
        catalog,
        np.hstack([text_items, kg_items]).astype(np.float32),
        users,
        split.train[["user_id", "item_id", "rating", "timestamp"]].reset_index(drop=True),
        sentences,
        np.stack([lookup[s] for s in sentences]).astype(np.float32),
        kg_demo,
        meta,
        links,
    )


def _content_map(rec: Recommender, cfg: FinetuneConfig | None = None):
    """The (text, genres, year) -> (vector, bias) map fit on the trained items' final vectors (`content_map`),
    with ``cfg``'s ``map_*`` knobs (None: the defaults)."""
    cfg = cfg or FinetuneConfig()
    trained = np.flatnonzero(rec.bundle.catalog["id_row"].to_numpy() < int(rec.meta["n_id_items"]))
    text = rec.bundle.item_content[trained, : int(rec.meta["text_dim"])]
    content_map = ContentMap.fit(
        text,
        rec.item_vecs[trained].float().cpu().numpy(),
        rec.item_bias[trained].float().cpu().numpy(),
        rec.bundle.catalog.iloc[trained],
        **_map_knobs(cfg),
    )
    log.info("content map: ridge alpha %.3g over %d trained items", content_map.alpha, len(trained))
    return content_map


def _map_knobs(cfg: FinetuneConfig) -> dict:
    """`ContentMap.fit`'s keyword arguments from the config."""
    return {"alphas": cfg.map_alphas, "rbf_scale": cfg.map_rbf_scale, "max_landmarks": cfg.map_max_landmarks}


def _profile_weight(
    rec: Recommender, dataset: Dataset, held: pd.DataFrame, threshold: float, cfg: FinetuneConfig
) -> tuple[float, np.ndarray, np.ndarray, dict[str, float]]:
    """The content map's profile term by grid search on pseudo-new items: its weight (``cfg.profile_weights``)
    and how many principal directions of the trained items' text it is taken in (``cfg.profile_dims``).
    The trained items in ``cfg.pseudo_new_folds`` folds (seed ``cfg.seed``), each fold mapped by a map fit
    on the other folds and ranked among itself for the users of ``held`` (held out of training) from their
    history less the fold, as the cold-item slice ranks new items; by NDCG@20. (weight, basis
    (k, text_dim), centre, report); weight 0 with nothing to rank."""
    catalog, n_id, text_dim = rec.bundle.catalog, int(rec.meta["n_id_items"]), int(rec.meta["text_dim"])
    trained = np.flatnonzero(catalog["id_row"].to_numpy() < n_id)
    vecs, bias = rec._item_arrays()
    text = rec.bundle.item_content[:, :text_dim]
    center = text[trained].mean(0)
    directions = np.linalg.svd(text[trained] - center, full_matrices=False)[2]  # principal, strongest first
    dims = [k for k in cfg.profile_dims if k <= len(directions)] or [len(directions)]
    profiles = {r["user_id"]: profile_of(r) for r in dataset.users.to_dict("records")}
    histories = {u: history_of(g) for u, g in held.groupby("user_id", sort=True)}
    ndcg: dict[tuple[int, float], list[np.ndarray]] = {(k, w): [] for k in dims for w in cfg.profile_weights}
    for fold in np.array_split(np.random.default_rng(cfg.seed).permutation(trained), cfg.pseudo_new_folds):
        position = np.full(len(catalog), -1, np.int64)
        position[fold] = np.arange(len(fold))
        rest = trained[position[trained] < 0]
        if len(rest) < ContentMap.MIN_ITEMS:  # too few left to fit the fold's map
            continue
        queries, positives = [], []
        for user, history in histories.items():
            liked = np.unique(
                [position[rec.item_row[i]] for i, r, _ in history if r >= threshold and position[rec.item_row[i]] >= 0]
            )
            if len(liked) and len(fold) > 1:
                queries.append(
                    Query(user, profiles[user], tuple(h for h in history if position[rec.item_row[h[0]]] < 0))
                )
                positives.append(liked)
        if not queries:
            continue
        fold_map = ContentMap.fit(text[rest], vecs[rest], bias[rest], catalog.iloc[rest], **_map_knobs(cfg))
        fold_vecs, fold_bias = fold_map(text[fold], catalog.iloc[fold])
        fold_text = text[fold] - center
        for part in blocks(len(queries), cfg.score_block):  # memory: a block of users x the fold
            rows = [rec._history_rows(q) for q in queries[part]]
            base = rec._user_vectors(queries[part], rows) @ fold_vecs.T + fold_bias
            liked_text = rec.liked_text(rows)
            for k in dims:
                similarity = (liked_text @ directions[:k].T) @ (fold_text @ directions[:k].T).T
                for w in cfg.profile_weights:
                    ndcg[k, w].append(
                        ranking_metrics(
                            base + w * similarity, np.ones(len(fold), bool), positives[part], 20, with_auc=False
                        )["ndcg"]
                    )
    means = {key: float(np.nanmean(np.concatenate(v))) for key, v in ndcg.items() if v}
    if not means:
        return 0.0, directions[: dims[0]], center, {}
    k, weight = max(means, key=lambda key: (means[key], -key[1], -key[0]))
    log.info(
        "content map profile term (pseudo-new items, %d folds): NDCG@20 %.4f -> %.4f (weight %g, %d directions)",
        cfg.pseudo_new_folds,
        means[dims[0], 0.0],
        means[k, weight],
        weight,
        k,
    )
    return (
        weight,
        directions[:k],
        center,
        {
            "content_profile_weight": weight,
            "content_profile_dims": float(k),
            "pseudo_new_ndcg_map": means[dims[0], 0.0],
            "pseudo_new_ndcg": means[k, weight],
        },
    )


def _fuse(
    rec: Recommender,
    fit: pd.DataFrame,
    dataset: Dataset,
    held: pd.DataFrame,
    excluded: set[str],
    cfg: FinetuneConfig,
    threshold: float,
) -> dict[str, Any]:
    """Tune the fusion's weights on the users of ``held`` (`fusion.tune_fusion_blocks`), set it on ``rec``;
    EASE is counted on ``fit``, the prior on the bundle's histories less the ``excluded`` users, as
    serving counts it (`fusion.Fusion.from_meta`): the same rows as ``fit``. The queries are scored
    ``cfg.score_block`` at a time. Past ``cfg.ease_max_items`` trained items EASE is skipped and the
    report says why (``fusion_ease_skipped``)."""
    from recsys_tasks.model.fusion import (
        EDGES,
        Fusion,
        FusionWeights,
        ease_matrix,
        fusion_meta,
        id_items,
        tune_fusion_blocks,
        tune_taste_blocks,
    )

    catalog, n_id = rec.bundle.catalog, int(rec.meta["n_id_items"])
    ease, skipped = None, ""
    if cfg.ease_lambda > 0 and n_id > cfg.ease_max_items:
        skipped = f"{n_id} trained items, over finetune.ease_max_items={cfg.ease_max_items}: the prior alone is fused"
        log.warning("fusion: EASE skipped: %s", skipped)
    elif cfg.ease_lambda > 0:
        ease = ease_matrix(fit, id_items(catalog, n_id), cfg.ease_lambda)
    zeros = tuple(0.0 for _ in range(len(EDGES) + 1))
    fusion = Fusion.from_meta(
        fusion_meta(FusionWeights(zeros, zeros), excluded, cfg.ease_lambda, {}),
        ease,
        catalog,
        rec.bundle.histories,
        rec.bundle.users,
        n_id,
        threshold,
    )
    queries, positives = [], []
    for _, part_queries, targets in fusion_queries(rec, dataset, held, threshold, cfg):
        queries.extend(part_queries)
        positives.extend(targets)
    if not queries:
        return {"fusion_ease_skipped": skipped} if skipped else {}

    def tuning_blocks():
        """(model scores, placed prior, placed EASE, lengths, candidates, positives) per block of queries."""
        for part in blocks(len(queries), cfg.score_block):
            seen = [rec._item_rows(q.history_items) for q in queries[part]]
            scores = rec.score(queries[part], fused=False)
            p, e, n = fusion.terms(queries[part], seen)
            placed_ease = _placed(e, fusion.id_cols, scores.shape) if e is not None else None
            yield (
                scores,
                _placed(p, fusion.id_cols, scores.shape),
                placed_ease,
                n,
                unseen(scores.shape[1], seen),
                positives[part],
            )

    weights, report = tune_fusion_blocks(
        tuning_blocks, prior_grid=cfg.fusion_prior_grid, ease_grid=cfg.fusion_ease_grid
    )
    tuned = fusion.reweighted(weights)
    rec.set_fusion(fusion_meta(weights, excluded, cfg.ease_lambda, report), ease, tuned)
    stated, targets = _stated_taste_queries(rec, dataset, held, threshold)
    if stated:

        def taste_blocks():
            """(fused scores, taste boost, candidates, positives) per block of the stated-taste queries."""
            for part in blocks(len(stated), cfg.score_block):
                boost = np.zeros((len(stated[part]), len(rec.item_ids)), np.float32)
                for q_i, q in enumerate(stated[part]):
                    boost[q_i, tuned.id_cols[tuned.taste_positions(rec.explainer.taste_genres(q.text))]] = 1.0
                yield rec.score(stated[part]), boost, np.ones(boost.shape, bool), targets[part]

        taste, report["taste"] = tune_taste_blocks(taste_blocks(), grid=cfg.fusion_taste_grid)
        weights = dataclasses.replace(weights, taste=taste)
        rec.set_fusion(fusion_meta(weights, excluded, cfg.ease_lambda, report), ease, fusion.reweighted(weights))
    out: dict[str, Any] = {
        f"fusion_{b}_{key}": float(v) for b, part in report.items() if isinstance(part, dict) for key, v in part.items()
    }
    if skipped:
        out["fusion_ease_skipped"] = skipped
    return out


def _stated_taste_queries(
    rec: Recommender, dataset: Dataset, held: pd.DataFrame, threshold: float
) -> tuple[list[Query], list[np.ndarray]]:
    """The held users as the protocol's stated-taste slice has its users: profile only, the sentence
    naming the two genres they like most, every positive a target."""
    profiles = {r["user_id"]: profile_of(r) for r in dataset.users.to_dict("records")}
    genres = dict(zip(dataset.items["item_id"], dataset.genre_lists()))
    queries, targets = [], []
    for user, group in held.groupby("user_id", sort=True):
        liked = [i for i in group.loc[group["rating"] >= threshold, "item_id"] if i in rec.item_row]
        text = stated_taste([genres[i] for i in liked])
        if text:
            queries.append(Query(user, profiles[user], (), text))
            targets.append(np.unique([rec.item_row[i] for i in liked]))
    return queries, targets


def _placed(part: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``part`` (q, len(cols)) in a zero (q, n) array at columns ``cols``."""
    out = np.zeros(shape, np.float32)
    out[:, cols] = part
    return out


def _rows_or_zeros(matrix: np.ndarray, rows: list[int]) -> np.ndarray:
    """``matrix``'s ``rows`` (float32), a zero row where a row is -1 (an item without a KG entity)."""
    at = np.asarray(rows, np.int64).reshape(-1)
    out = np.zeros((len(at), matrix.shape[1]), np.float32)
    out[at >= 0] = matrix[at[at >= 0]]
    return out


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)

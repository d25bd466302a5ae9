"""A request's reference items ("something like X"): their weights fitted on held-out users (`reference_weights`),
carried by the bundle, and the fit's fast path scoring exactly as serving does."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recsys_tasks.config import ConfigError, PipelineConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.data.split import Split
from recsys_tasks.intent.gate import rank_scores
from recsys_tasks.intent.reader import SoftWeights
from recsys_tasks.model.recommender import Recommender
from recsys_tasks.model.reference_weights import fit_reference_weights, reference_queries
from recsys_tasks.protocol.metrics import ranking_metrics


@pytest.fixture
def loaded(tiny_bundle: Any, tiny_snapshot: Any) -> tuple[Recommender, Dataset, Any]:
    rec = Recommender.load(tiny_bundle.path("bundle"))
    return rec, Dataset.load(tiny_snapshot.out_dir), Split.load(tiny_snapshot.out_dir).train


def test_each_query_names_one_liked_item_and_is_scored_on_the_others(loaded) -> None:
    rec, dataset, train = loaded
    queries, references, positives = reference_queries(rec, dataset, train, 4.0, seed=0)
    assert queries, "the tiny training part has users with two liked items"
    item_ids = rec.bundle.catalog["item_id"].astype(str).to_numpy()
    for query, reference, rows in zip(queries, references, positives):
        assert query.history == () and query.text == f"Something like {rec.bundle.catalog['title'].iloc[reference]}."
        assert rec.intents.like_rows(rec.intents.parse(query.text)).tolist() == [reference]
        liked = train[(train["user_id"].astype(str) == query.user_id) & (train["rating"] >= 4.0)]
        assert set(item_ids[rows]) == set(liked["item_id"].astype(str)) - {item_ids[reference]}


def test_the_fitted_weights_score_as_serving_scores_them(loaded) -> None:
    """The fit adds the soft terms to the fused scores itself; serving, with the chosen weights set, must give the
    same NDCG@20 on the same queries (the named item never a candidate)."""
    rec, dataset, train = loaded
    weights, report = fit_reference_weights(rec, dataset, train, 4.0, 0, (0.0, 1.0, 4.0), (0.0, 0.5), block=3)
    assert (weights.like, weights.model_like) == (report["reference_like_weight"], report["reference_model_weight"])
    assert weights.like in (0.0, 1.0, 4.0) and weights.model_like in (0.0, 0.5) and weights.text == SoftWeights().text
    queries, references, positives = reference_queries(rec, dataset, train, 4.0, seed=0)
    rec.intents.weights = weights
    scores = rec.score(queries)
    candidates = np.ones(scores.shape, bool)
    candidates[np.arange(len(queries)), references] = False
    served = ranking_metrics(scores, candidates, positives, 20, with_auc=False)["ndcg"]
    assert float(np.nanmean(served)) == pytest.approx(report["reference_ndcg"], abs=1e-6)
    assert report["reference_queries"] == len(queries)


def test_a_grid_of_zeros_gives_zero_weights(loaded) -> None:
    rec, dataset, train = loaded
    weights, _ = fit_reference_weights(rec, dataset, train, 4.0, 0, (0.0,), (0.0,))
    assert (weights.like, weights.model_like) == (0.0, 0.0)


def test_the_fit_is_reported_and_applied_only_where_asked(
    tiny_bundle: Any, tiny_snapshot: Any, tiny_kg: Any, tiny_text: Any, tiny_bert: str, tmp_path: Path
) -> None:
    from recsys_tasks.model.finetune import finetune

    rec = Recommender.load(tiny_bundle.path("bundle"))  # the default config: reported, the defaults kept
    assert rec.intents.weights == SoftWeights() == SoftWeights(**rec.meta["intent_weights"])
    assert tiny_bundle.metrics["reference_weights_applied"] == 0.0
    cfg = replace(tiny_bundle_config(tiny_bundle), fit_reference_weights=True, reference_like_grid=(0.0, 3.0))
    cfg = replace(cfg, fusion_user_frac=0.4)  # enough held-out users with two liked items for the fit
    applied = finetune(cfg, tiny_snapshot.out_dir, tiny_kg.out_dir, tiny_text.out_dir, tmp_path / "ft", tiny_bert)
    rec = Recommender.load(applied.path("bundle"))
    assert applied.metrics["reference_weights_applied"] == 1.0
    assert rec.intents.weights.like == applied.metrics["reference_like_weight"] in (0.0, 3.0)
    assert rec.intents.weights.model_like == applied.metrics["reference_model_weight"]


def test_weights_from_meta_default_what_is_missing() -> None:
    assert SoftWeights.from_meta(None) == SoftWeights()
    assert SoftWeights.from_meta({"like": 1.0, "unknown": 3}) == SoftWeights(like=1.0)


def test_the_weighted_soft_terms_are_the_weighted_sum_of_their_parts(loaded) -> None:
    rec, _, _ = loaded
    title = rec.bundle.catalog["title"].iloc[0]
    intent = rec.intents.parse(f"something like {title} about a lighthouse keeper")
    assert intent.like and intent.free_text
    scores = np.linspace(0, 1, len(rec.bundle.catalog)).astype(np.float32)
    tier = rec.intents.tiers(intent).tier
    item_text = rec.bundle.item_content[:, : int(rec.meta["text_dim"])]
    args = (rec._unit_item_vectors, lambda text: rec.text_vectors([text])[0], rec.explainer.taste_z, item_text)
    parts = rec.intents.soft_parts(intent, scores, tier, *args)
    assert set(parts) == {"like", "model_like", "text"}
    rec.intents.weights = SoftWeights(like=1.5, model_like=0.25, text=2.0)
    expected = 1.5 * parts["like"] + 0.25 * parts["model_like"] + 2.0 * parts["text"]
    np.testing.assert_allclose(rec.intents.weigh(parts, len(scores)), expected, rtol=1e-5, atol=1e-6)
    adjusted, _ = rec.intents.adjust(intent, scores, *args)  # what serving ranks by: the same weighted terms
    np.testing.assert_allclose(adjusted, rank_scores(scores + expected, tier), rtol=1e-5, atol=1e-5)


def test_a_reference_grid_without_zero_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"finetune\.reference_like_grid"):
        PipelineConfig().with_overrides(["finetune.reference_like_grid=[1.0, 2.0]"])


def tiny_bundle_config(result: Any) -> Any:
    """The FinetuneConfig a finetune result was trained with (its bundle.json keeps it)."""
    from recsys_tasks.artifacts import read_json
    from recsys_tasks.config import FinetuneConfig

    saved = read_json(Path(result.path("bundle")) / "bundle.json")["finetune"]
    fields = FinetuneConfig.__dataclass_fields__
    return FinetuneConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in fields})

"""The content-to-collaborative map on synthetic data with a known linear answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys_tasks.content_map import ContentMap


def _linear(n: int = 200, text_dim: int = 12, dim: int = 3, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n, text_dim)).astype(np.float32)
    true = rng.normal(size=(text_dim, dim + 1))
    target = text @ true + 0.5 + noise * rng.normal(size=(n, dim + 1))
    return text, target[:, :dim], target[:, dim], true


def test_a_linear_relation_is_recovered_for_new_items() -> None:
    text, vecs, bias, true = _linear()
    content_map = ContentMap.fit(text[:150], vecs[:150], bias[:150])
    new_vecs, new_bias = content_map(text[150:])  # items it was not fit on
    np.testing.assert_allclose(new_vecs, vecs[150:], atol=0.05)
    np.testing.assert_allclose(new_bias, bias[150:], atol=0.05)
    assert content_map.weights.shape == (13, 4) and content_map.text_dim == 12


def test_the_penalty_is_chosen_by_cross_validation() -> None:
    clean = ContentMap.fit(*_linear()[:3])
    noisy = ContentMap.fit(*_linear(n=40, text_dim=30, noise=3.0)[:3])
    assert clean.alpha < noisy.alpha  # little to shrink vs. noise to shrink away


def test_it_saves_and_loads(tmp_path: Path) -> None:
    content_map = ContentMap.fit(*_linear()[:3])
    content_map.save(tmp_path)
    loaded = ContentMap.load(tmp_path)
    np.testing.assert_array_equal(loaded.weights, content_map.weights)
    assert loaded.alpha == content_map.alpha
    assert ContentMap.load(tmp_path / "elsewhere") is None  # a bundle saved before maps existed


def test_too_few_trained_items_is_an_error_that_says_so() -> None:
    text, vecs, bias, _ = _linear(n=2)
    with pytest.raises(ValueError, match="2 trained item"):
        ContentMap.fit(text, vecs, bias)

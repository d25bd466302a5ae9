"""The content-to-collaborative map on synthetic data with a known linear answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
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


def _catalog_driven(n: int = 300, seed: int = 0):
    """Items whose bias is set by their year and genres alone; the text is noise."""
    rng = np.random.default_rng(seed)
    years = rng.integers(1930, 1999, n).astype(float)
    years[:10] = np.nan  # unknown years: their own column
    genres = rng.choice(["Drama", "Comedy", "Horror|Comedy", "Sci-Fi"], n)
    items = pd.DataFrame({"genres": genres, "year": years})
    bias = np.where(years >= 1990, 2.0, 0.0) + np.char.count(genres.astype(str), "Comedy") - np.isnan(years)
    text = rng.normal(size=(n, 8)).astype(np.float32) / np.sqrt(8)
    return text, np.zeros((n, 2)), bias, items


def test_catalog_fields_carry_what_the_text_does_not() -> None:
    text, vecs, bias, items = _catalog_driven()
    with_fields = ContentMap.fit(text[:200], vecs[:200], bias[:200], items.iloc[:200])
    text_only = ContentMap.fit(text[:200], vecs[:200], bias[:200])
    assert with_fields.genres == ("Comedy", "Drama", "Horror", "Sci-Fi") and with_fields.text_dim == 8
    _, predicted = with_fields(text[200:], items.iloc[200:])
    _, guessed = text_only(text[200:])
    assert np.abs(predicted - bias[200:]).mean() < 0.35 < np.abs(guessed - bias[200:]).mean()
    # a year the map has not seen (later than any) and a genre it does not know are still mapped
    later = pd.DataFrame({"genres": ["Western|Comedy"], "year": [2030]})
    np.testing.assert_allclose(with_fields(text[:1], later)[1], 3.0, atol=0.6)


def test_a_map_with_catalog_fields_needs_the_rows() -> None:
    text, vecs, bias, items = _catalog_driven()
    content_map = ContentMap.fit(text, vecs, bias, items)
    with pytest.raises(ValueError, match="need as many catalog rows"):
        content_map(text[:3])
    with pytest.raises(ValueError, match="got 2"):
        content_map(text[:3], items.iloc[:2])


def test_it_saves_and_loads(tmp_path: Path) -> None:
    text, vecs, bias, items = _catalog_driven()
    content_map = ContentMap.fit(text, vecs, bias, items)
    content_map.save(tmp_path)
    loaded = ContentMap.load(tmp_path)
    np.testing.assert_array_equal(loaded.weights, content_map.weights)
    assert (loaded.alpha, loaded.genres, loaded.year_edges) == (content_map.alpha, content_map.genres,
                                                                content_map.year_edges)
    np.testing.assert_array_equal(loaded(text, items)[1], content_map(text, items)[1])
    assert ContentMap.load(tmp_path / "elsewhere") is None  # a bundle saved before maps existed


def test_a_map_saved_before_catalog_fields_maps_text_alone(tmp_path: Path) -> None:
    content_map = ContentMap.fit(*_linear()[:3])
    np.savez(tmp_path / "content_map.npz", weights=content_map.weights, alpha=np.float64(content_map.alpha))
    loaded = ContentMap.load(tmp_path)
    assert loaded.genres == () and loaded.year_edges == () and loaded.text_dim == 12
    text = _linear()[0]
    np.testing.assert_array_equal(loaded(text)[0], content_map(text)[0])


def test_too_few_trained_items_is_an_error_that_says_so() -> None:
    text, vecs, bias, _ = _linear(n=2)
    with pytest.raises(ValueError, match="2 trained item"):
        ContentMap.fit(text, vecs, bias)

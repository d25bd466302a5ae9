"""The content-to-collaborative map on synthetic data with a known answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import RidgeCV

from recsys_tasks.config import FinetuneConfig
from recsys_tasks.model.content_map import ContentMap, ridge_loo


def _smooth(n: int = 300, text_dim: int = 6, dim: int = 3, noise: float = 0.0, seed: int = 0):
    """Unit text vectors (as the encoder's) and a target that is a smooth, not a linear, function of them."""
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n, text_dim))
    text = (text / np.linalg.norm(text, axis=1, keepdims=True)).astype(np.float32)
    directions = rng.normal(size=(text_dim, dim + 1))
    directions /= np.linalg.norm(directions, axis=0)  # one unit direction per output: sin(3 u·x) bends twice
    target = np.sin(3 * text @ directions) + 0.5 + noise * rng.normal(size=(n, dim + 1))
    return text, target[:, :dim], target[:, dim]


def test_a_smooth_relation_is_recovered_for_new_items() -> None:
    text, vecs, bias = _smooth()
    content_map = ContentMap.fit(text[:250], vecs[:250], bias[:250])
    new_vecs, new_bias = content_map(text[250:])  # items it was not fit on
    error = np.abs(np.hstack([new_vecs, new_bias[:, None]]) - np.hstack([vecs, bias[:, None]])[250:]).mean()
    linear = RidgeCV(alphas=FinetuneConfig().map_alphas).fit(text[:250], np.hstack([vecs, bias[:, None]])[:250])
    linear_error = np.abs(linear.predict(text[250:]) - np.hstack([vecs, bias[:, None]])[250:]).mean()
    assert error < 0.1 < 0.15 < linear_error  # what a linear map of the same inputs cannot fit
    assert content_map.landmarks.shape == (250, 6) and content_map.weights.shape == (251, 4)
    assert content_map.text_dim == 6 and content_map.gamma > 0


def test_the_penalty_is_chosen_by_cross_validation() -> None:
    clean = ContentMap.fit(*_smooth())
    noisy = ContentMap.fit(*_smooth(n=60, noise=2.0))
    assert clean.alpha < noisy.alpha  # little to shrink vs. noise to shrink away


@pytest.mark.parametrize(("n", "p"), [(400, 60), (50, 50), (40, 70)])
def test_the_leave_one_out_ridge_is_scikit_learns_ridge_cv(n: int, p: int) -> None:
    rng = np.random.default_rng(n + p)
    x = rng.normal(size=(n, p)) + 3.0  # off-centre: the intercept matters
    y = x[:, :5] @ rng.normal(size=(5, 4)) + rng.normal(scale=2.0, size=(n, 4)) + 7.0
    alphas = FinetuneConfig().map_alphas
    reference = RidgeCV(alphas=np.array(alphas)).fit(x, y)
    alpha, coef, intercept = ridge_loo(x, y, alphas, block=17)  # blocks that do not divide the rows
    assert alpha == reference.alpha_
    np.testing.assert_allclose(coef, reference.coef_.T, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(intercept, reference.intercept_, rtol=1e-6, atol=1e-8)


def test_the_leave_one_out_ridge_picks_each_penalty_where_it_is_best() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 20))
    clean = x @ rng.normal(size=(20, 2))
    assert ridge_loo(x, clean, (0.01, 1.0, 100.0))[0] == 0.01  # nothing to shrink away
    assert ridge_loo(x, rng.normal(size=(200, 2)), (0.01, 1.0, 100.0))[0] == 100.0  # only noise


def test_the_fit_uses_the_configs_penalties_kernel_width_and_landmarks() -> None:
    text, vecs, bias = _smooth()
    default = ContentMap.fit(text, vecs, bias)
    assert default.alpha in FinetuneConfig().map_alphas and default.landmarks.shape[0] == len(text)
    narrow = ContentMap.fit(text, vecs, bias, alphas=(7.0,), rbf_scale=3.0, max_landmarks=50)
    assert narrow.alpha == 7.0 and narrow.landmarks.shape == (50, text.shape[1])
    assert narrow.gamma == pytest.approx(2 * default.gamma)  # gamma is rbf_scale over the same median distance


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
    np.testing.assert_allclose(with_fields(np.zeros((1, 8), np.float32), later)[1], 3.0, atol=0.6)


def test_a_map_with_catalog_fields_needs_the_rows() -> None:
    text, vecs, bias, items = _catalog_driven()
    content_map = ContentMap.fit(text, vecs, bias, items)
    with pytest.raises(ValueError, match="need as many catalog rows"):
        content_map(text[:3])
    with pytest.raises(ValueError, match="got 2"):
        content_map(text[:3], items.iloc[:2])


def test_it_saves_and_loads(tmp_path: Path) -> None:
    text, vecs, bias, items = _catalog_driven()
    basis, center = np.linalg.qr(np.random.default_rng(2).normal(size=(8, 3)))[0].T, text.mean(0)
    content_map = ContentMap.fit(text, vecs, bias, items).with_profile(8.0, basis, center)
    content_map.save(tmp_path)
    loaded = ContentMap.load(tmp_path)
    np.testing.assert_array_equal(loaded.weights, content_map.weights)
    np.testing.assert_array_equal(loaded.landmarks, content_map.landmarks)
    assert (loaded.alpha, loaded.genres, loaded.year_edges, loaded.gamma, loaded.profile_weight) == (
        content_map.alpha,
        content_map.genres,
        content_map.year_edges,
        content_map.gamma,
        8.0,
    )
    assert loaded.has_profile and loaded.profile(text).shape == (len(text), 3)
    np.testing.assert_allclose(loaded.profile(text), (text - center) @ basis.T, atol=1e-6)
    np.testing.assert_array_equal(loaded(text, items)[1], content_map(text, items)[1])
    assert ContentMap.load(tmp_path / "elsewhere") is None  # a bundle saved before maps existed


def test_a_map_saved_before_the_kernel_or_the_catalog_fields_maps_linearly(tmp_path: Path) -> None:
    text, _, _, items = _catalog_driven()
    weights = np.random.default_rng(3).normal(size=(8 + 1, 3)).astype(np.float32)  # text alone, no landmarks
    np.savez(tmp_path / "content_map.npz", weights=weights, alpha=np.float64(1.0))
    loaded = ContentMap.load(tmp_path)
    assert loaded.genres == () and loaded.year_edges == () and loaded.landmarks is None and loaded.text_dim == 8
    assert loaded.profile_weight == 0.0 and not loaded.has_profile  # saved before the profile term: none
    vecs, bias = loaded(text)
    np.testing.assert_allclose(np.hstack([vecs, bias[:, None]]), text @ weights[:-1] + weights[-1], atol=1e-5)
    fitted = ContentMap.fit(text, np.zeros((len(text), 2)), np.zeros(len(text)), items)  # its fields, then linear
    n_inputs = fitted.landmarks.shape[1]
    linear = np.random.default_rng(4).normal(size=(n_inputs + 1, 3)).astype(np.float32)
    np.savez(
        tmp_path / "content_map.npz",
        weights=linear,
        alpha=np.float64(1.0),
        genres=np.array(fitted.genres),
        year_edges=np.array(fitted.year_edges),
    )
    loaded = ContentMap.load(tmp_path)
    assert loaded.landmarks is None and loaded.text_dim == 8 and loaded.genres == fitted.genres
    assert loaded(text, items)[0].shape == (len(text), 2)


def test_too_few_trained_items_is_an_error_that_says_so() -> None:
    text, vecs, bias = _smooth(n=2)
    with pytest.raises(ValueError, match="2 trained item"):
        ContentMap.fit(text, vecs, bias)


def test_many_items_are_mapped_in_chunks_as_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import recsys_tasks.model.content_map as content_map_module

    text, vecs, bias = _smooth()
    content_map = ContentMap.fit(text, vecs, bias)
    whole = content_map(text)
    monkeypatch.setattr(content_map_module, "CHUNK_ROWS", 7)  # 300 rows: 42 full chunks and a short one
    chunked = content_map(text)
    np.testing.assert_allclose(chunked[0], whole[0], atol=1e-6)
    np.testing.assert_allclose(chunked[1], whole[1], atol=1e-6)


def test_the_float32_kernel_is_scikit_learns() -> None:
    from sklearn.metrics.pairwise import rbf_kernel

    from recsys_tasks.model.content_map import _rbf

    rng = np.random.default_rng(5)
    x, landmarks = rng.normal(size=(50, 9)).astype(np.float32), rng.normal(size=(20, 9)).astype(np.float32)
    ours = _rbf(x, landmarks, 0.3)
    assert ours.dtype == np.float32 and ours.shape == (50, 20)
    np.testing.assert_allclose(
        ours, rbf_kernel(x.astype(np.float64), landmarks.astype(np.float64), gamma=0.3), atol=1e-6
    )
    assert np.allclose(_rbf(landmarks, landmarks, 0.3).diagonal(), 1.0, atol=1e-6)  # no negative distance


def test_a_map_without_a_profile_term_says_so_when_asked_for_one() -> None:
    text, vecs, bias = _smooth(n=20)
    content_map = ContentMap.fit(text, vecs, bias)
    assert not content_map.has_profile
    with pytest.raises(ValueError, match="no profile term"):
        content_map.profile(text)

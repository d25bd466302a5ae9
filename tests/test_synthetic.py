"""bench/synthetic.py: files the extract stage reads and validates, deterministic for a seed, and with
structure a model can learn (demographic popularity beats global popularity on held-out users)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_tasks.config import ExtractConfig
from recsys_tasks.data.extract import extract

_PATH = Path(__file__).resolve().parents[1] / "bench" / "synthetic.py"
_spec = importlib.util.spec_from_file_location("bench_synthetic", _PATH)
assert _spec and _spec.loader
synthetic = importlib.util.module_from_spec(_spec)
sys.modules["bench_synthetic"] = synthetic
_spec.loader.exec_module(synthetic)

SUFFIXES = (".inter", ".user", ".item", ".kg", ".link")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synthetic")
    summary = synthetic.generate(synthetic.Spec(interactions=40_000, users=1_500, items=600, seed=3), out)
    return out, summary


def _read(folder: Path, suffix: str) -> pd.DataFrame:
    frame = pd.read_csv(folder / f"synthetic{suffix}", sep="\t", dtype=str, keep_default_na=False)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def test_writes_recbole_files_that_extract_validates(small, tmp_path):
    folder, summary = small
    assert all((folder / f"synthetic{s}").exists() for s in SUFFIXES)
    assert summary["written_interactions"] == 40_000
    result = extract(ExtractConfig(source=str(folder), cold_user_frac=0.02, cold_item_frac=0.02), tmp_path / "x")
    m = result.metrics
    assert (m["n_interactions"], m["n_users"], m["n_items"]) == (40_000, 1_500, 600)
    assert m["dropped_duplicate_interactions"] == m["dropped_links"] == m["dropped_kg_triples"] == 0
    assert m["n_cold_users"] == 30 and m["n_cold_items"] == 12


def test_columns_match_the_bundled_movielens(small):
    from recsys_tasks.data.sources import bundled_dir

    folder, _ = small
    bundled = bundled_dir()
    for suffix in SUFFIXES:
        ours = (folder / f"synthetic{suffix}").read_text().split("\n", 1)[0].split("\t")
        theirs = (bundled / f"ml-100k{suffix}").read_text().split("\n", 1)[0].split("\t")
        extra = {"zip_code:token"} if suffix == ".user" else set()  # zip codes carry no taste: not generated
        assert set(theirs) - extra <= set(ours), suffix
    items = _read(folder, ".item")
    assert items["description"].str.len().min() > 0


def test_deterministic_for_a_seed_and_different_across_seeds(tmp_path):
    spec = synthetic.Spec(interactions=6_000, users=300, items=200, seed=7)
    synthetic.generate(spec, tmp_path / "a")
    synthetic.generate(spec, tmp_path / "b")
    synthetic.generate(synthetic.Spec(interactions=6_000, users=300, items=200, seed=8), tmp_path / "c")
    for suffix in SUFFIXES:
        a = (tmp_path / "a" / f"synthetic{suffix}").read_bytes()
        assert a == (tmp_path / "b" / f"synthetic{suffix}").read_bytes(), suffix
    assert (tmp_path / "a/synthetic.inter").read_bytes() != (tmp_path / "c/synthetic.inter").read_bytes()


def test_chunked_writing_gives_distinct_pairs_and_exact_counts(tmp_path):
    spec = synthetic.Spec(interactions=20_000, users=500, items=300, seed=1, chunk=1_000)  # ~20 chunks
    synthetic.generate(spec, tmp_path)
    inter = _read(tmp_path, ".inter")
    assert len(inter) == 20_000
    assert not inter.duplicated(["user_id", "item_id"]).any()
    per_user = inter["user_id"].value_counts()
    assert len(per_user) == 500 and per_user.min() >= spec.min_per_user
    assert per_user.max() > 4 * per_user.median()  # long-tailed activity
    ratings = inter["rating"].astype(int)
    assert ratings.between(1, 5).all() and ratings.nunique() == 5


def test_dense_data_still_gets_distinct_pairs_and_exact_counts(tmp_path):
    """At the densest allowed (a quarter of users x items), heavy users need half the catalogue each."""
    synthetic.generate(synthetic.Spec(interactions=2_500, users=100, items=100, seed=2), tmp_path)
    inter = _read(tmp_path, ".inter")
    assert len(inter) == 2_500 and not inter.duplicated(["user_id", "item_id"]).any()
    assert inter["user_id"].value_counts().max() <= 50


def _ndcg(ranked: np.ndarray, relevant: list[set[int]], k: int = 20) -> float:
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    scores = []
    for row, rel in zip(ranked, relevant, strict=True):
        if rel:
            gains = np.isin(row[:k], list(rel)) * discounts
            scores.append(gains.sum() / discounts[: min(len(rel), k)].sum())
    return float(np.mean(scores))


def test_demographics_predict_taste(small):
    """Held-out users ranked by the popularity within their (age band, gender, occupation) group beat the
    global popularity ranking: the structure the cold-user models are meant to find."""
    folder, _ = small
    inter = _read(folder, ".inter").astype({"user_id": int, "item_id": int, "rating": float})
    users = _read(folder, ".user").astype({"user_id": int, "age": int})
    users["group"] = pd.cut(users["age"], [0, 18, 25, 35, 45, 50, 56, 200], right=False).astype(str)
    users["group"] += users["gender"] + users["occupation"]
    held = set(np.random.default_rng(0).permutation(users["user_id"])[:150].tolist())
    liked = inter[inter["rating"] >= 4]
    train = liked[~liked["user_id"].isin(held)].merge(users[["user_id", "group"]], on="user_id")
    test = liked[liked["user_id"].isin(held)]
    n_items = 600
    global_rank = np.argsort(-np.bincount(train["item_id"], minlength=n_items + 1))
    group_counts = train.groupby(["group", "item_id"]).size()
    relevant, by_global, by_group = [], [], []
    group_of = users.set_index("user_id")["group"]
    for user, rows in test.groupby("user_id"):
        relevant.append(set(rows["item_id"]))
        by_global.append(global_rank[:20])
        group = group_of[user]
        if group in group_counts.index.get_level_values(0):
            counts = group_counts.loc[group]
            score = np.bincount(counts.index, weights=counts.values, minlength=n_items + 1)
            by_group.append(np.argsort(-(score + 1e-3 * np.bincount(train["item_id"], minlength=n_items + 1))))
        else:
            by_group.append(global_rank)
    global_ndcg = _ndcg(np.array(by_global), relevant)
    group_ndcg = _ndcg(np.array([r[:20] for r in by_group]), relevant)
    assert group_ndcg > 1.15 * global_ndcg, (group_ndcg, global_ndcg)


def test_kg_entities_link_items_liked_together(small):
    """KG entities are shared within a cluster: items that share a director are liked by the same users
    more often than random item pairs."""
    folder, _ = small
    kg = _read(folder, ".kg")
    links = _read(folder, ".link")
    inter = _read(folder, ".inter").astype({"rating": float})
    liked = inter[inter["rating"] >= 4]
    directors = kg[kg["relation_id"] == "film.film.directed_by"].merge(links, left_on="head_id", right_on="entity_id")[
        ["item_id", "tail_id"]
    ]
    pairs = directors.merge(directors, on="tail_id").query("item_id_x < item_id_y")
    users_of = liked.groupby("item_id")["user_id"].apply(set)

    def overlap(a: pd.Series, b: pd.Series) -> float:
        return float(np.mean([len(users_of.get(x, set()) & users_of.get(y, set())) for x, y in zip(a, b)]))

    rng = np.random.default_rng(0)
    ids = links["item_id"].to_numpy()
    random_a, random_b = rng.choice(ids, len(pairs)), rng.choice(ids, len(pairs))
    assert overlap(pairs["item_id_x"], pairs["item_id_y"]) > 1.5 * overlap(random_a, random_b)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"interactions": 100, "users": 50, "items": 100}, "at least 5 per user"),
        ({"interactions": 10_000, "users": 100, "items": 100}, "at most a quarter of users x items"),
        ({"interactions": 1_000, "users": 100, "items": 100, "clusters": 99}, "clusters must be 1.."),
        ({"interactions": 1_000, "users": 100, "items": 30}, "at least twice the clusters"),
        ({"interactions": 1_000, "users": 0, "items": 100}, "need at least 1 user"),
        ({"interactions": 1_000, "users": 100, "items": 100, "in_cluster": 1.5}, "in_cluster must be"),
    ],
)
def test_bad_specs_are_refused_naming_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic.Spec(**kwargs)


def test_cli_reports_a_bad_spec(capsys):
    with pytest.raises(SystemExit):
        synthetic.main(["--interactions", "10", "--users", "50", "--items", "100", "--out", "/nonexistent/x"])
    assert "at least 5 per user" in capsys.readouterr().err


# bench/bench_scale.py and bench/peers.py: their pieces that run without training the workflow or LightFM


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", _PATH.parent / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = module
    spec.loader.exec_module(module)
    return module


bench_scale = _load("bench_scale")
peers = _load("peers")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("5M", (5_000_000, 100_000, 20_000)),
        ("25M", (25_000_000, 162_000, 62_000)),
        ("50k", (50_000, 1_000, 250)),
        ("50k:1000:400", (50_000, 1_000, 400)),
    ],
)
def test_scale_sizes(text, expected):
    assert bench_scale.parse_size(text) == expected


@pytest.mark.parametrize("text", ["5G", "abc", "50k:10", "50k:a:b"])
def test_scale_refuses_a_bad_size(text):
    with pytest.raises(Exception, match="size"):
        bench_scale.parse_size(text)


def test_growth_exponent_is_the_log_log_slope():
    ok = bench_scale.StageRun
    assert bench_scale.exponent(ok("s", "ok", 10.0), ok("s", "ok", 40.0), 1_000, 4_000) == pytest.approx(1.0)
    assert bench_scale.exponent(ok("s", "ok", 10.0), ok("s", "ok", 160.0), 1_000, 4_000) == pytest.approx(2.0)
    assert np.isnan(bench_scale.exponent(ok("s", "ok", 10.0), ok("s", "timed out", 99.0), 1_000, 4_000))


def test_a_stage_past_its_timeout_is_stopped_and_reported(small, tmp_path):
    folder, _ = small
    env = {**os.environ, "RECSYS_WORKDIR": str(tmp_path)}
    run = bench_scale.run_stage("extract", [f"extract.source={folder}"], tmp_path / "run", env, timeout=0.2)
    assert run.status == "timed out" and not (tmp_path / "run" / "extract" / "result.json").exists()
    failed = bench_scale.run_stage("extract", ["extract.source=/nonexistent"], tmp_path / "bad", env, timeout=600)
    assert failed.status == "failed" and "does not exist" in failed.note


def test_peers_popularity_systems_on_the_workflows_split(small, tmp_path, capsys):
    """The peers' evaluation on the same held-out users and items as the extract stage (no LightFM needed)."""
    folder, _ = small
    split = tmp_path / "extract"
    extract(ExtractConfig(source=str(folder), cold_user_frac=0.05, cold_item_frac=0.05), split)
    out = tmp_path / "peers.json"
    systems = "popularity,demographic_popularity,genre_profile"
    peers.main(["--data", str(folder), "--split", str(split), "--systems", systems, "--json", str(out)])
    found = json.loads(out.read_text())
    assert found["summary"]["cold_users"] == 75 and found["summary"]["cold_items"] == 30
    rows = {r["system"]: r for r in found["results"]}
    assert rows["demographic_popularity"]["new users"] > rows["popularity"]["new users"]
    assert 0 < rows["genre_profile"]["new items"] <= 1
    assert rows["popularity"]["warm users"] > 0
    assert "| demographic_popularity |" in capsys.readouterr().out


def test_peers_refuse_a_missing_split(small, tmp_path, capsys):
    folder, _ = small
    with pytest.raises(SystemExit):
        peers.main(["--data", str(folder), "--split", str(tmp_path)])
    assert "split.json does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        peers.main(["--data", str(folder), "--systems", "lightfm,xgboost"])
    assert "unknown ['xgboost']" in capsys.readouterr().err


def test_scale_runs_the_peers_on_the_extract_split(small, tmp_path):
    """bench_scale's peers step with this interpreter: the popularity systems score, LightFM (not installed
    in the project's environment) is reported as failed rather than stopping the benchmark."""
    folder, _ = small
    split = tmp_path / "extract"
    extract(ExtractConfig(source=str(folder), cold_user_frac=0.02, cold_item_frac=0.02), split)
    text = bench_scale.run_peers(sys.executable, folder, split, timeout=600)
    assert "held out (the workflow's): 30 users, 12 items" in text
    assert "| popularity |" in text and "| demographic_popularity |" in text
    try:
        import lightfm  # noqa: F401
    except ImportError:
        assert "| lightfm | failed: ModuleNotFoundError" in text
    assert "cannot run" in bench_scale.run_peers("/nonexistent/python", folder, split, timeout=60)

"""bench/bench_peers.py: the hand-off to the peers' environment, their scores evaluated here, the seed intervals."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_peers  # noqa: E402
import peers_ml100k  # noqa: E402

from recsys_tasks.config import EvaluateConfig  # noqa: E402
from recsys_tasks.data.dataset import Dataset  # noqa: E402
from recsys_tasks.data.split import Split  # noqa: E402
from recsys_tasks.protocol.slices import build_slices  # noqa: E402

PEERS_PYTHON = ROOT / "bench/out/peers-venv/bin/python"


@pytest.fixture(scope="module")
def handoff(tiny_snapshot: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, Split, list, Path]:
    dataset, split = Dataset.load(tiny_snapshot.out_dir), Split.load(tiny_snapshot.out_dir)
    slices = build_slices(dataset, split, EvaluateConfig(), 4.0)
    text = np.random.default_rng(0).normal(size=(len(dataset.items), 8)).astype(np.float32)
    out = tmp_path_factory.mktemp("handoff")
    validation = set(sorted(split.train["user_id"].unique())[:2])
    bench_peers.write_handoff(dataset, split, slices, text, validation, out, 42, 4.0)
    return dataset, split, slices, out


def test_handoff_carries_the_split_and_every_slices_queries_but_no_positives(handoff: tuple) -> None:
    dataset, split, slices, out = handoff
    meta = json.loads((out / "meta.json").read_text())
    assert meta["slices"] == [s.name for s in slices]
    assert (meta["n_users"], meta["n_items"]) == (len(dataset.users), len(dataset.items))
    users, items = dataset.users["user_id"].astype(str), dataset.items["item_id"].astype(str)
    assert [users[r] for r in meta["validation_users"]] == sorted(split.train["user_id"].unique())[:2]
    train = np.load(out / "train.npz")
    pairs = set(zip(users.to_numpy()[train["u"]], items.to_numpy()[train["i"]], strict=True))
    assert pairs == set(zip(split.train["user_id"].astype(str), split.train["item_id"].astype(str), strict=True))
    z = np.load(out / "slices.npz")
    assert not [key for key in z.files if "positive" in key]  # the runner never sees what it is scored on
    for n, s in enumerate(slices):
        assert [users[r] for r in z[f"{n}/users"]] == [q.user_id for q in s.queries]
        np.testing.assert_array_equal(z[f"{n}/candidates"], s.candidates)
        indptr, indices = z[f"{n}/history/indptr"], z[f"{n}/history/indices"]
        for row, q in enumerate(s.queries):
            got = set(items.to_numpy()[indices[indptr[row] : indptr[row + 1]]])
            assert got == set(q.history_items), (s.name, q.user_id)
        if s.excluded:
            e_ptr, e_idx = z[f"{n}/excluded/indptr"], z[f"{n}/excluded/indices"]
            for row, excluded in enumerate(s.excluded):
                np.testing.assert_array_equal(np.sort(e_idx[e_ptr[row] : e_ptr[row + 1]]), np.sort(excluded))
    item_arrays = np.load(out / "items.npz")
    assert item_arrays["genres"].shape[0] == len(dataset.items)
    assert item_arrays["text"].shape == (len(dataset.items), 8)


def test_handoff_rejects_text_vectors_of_another_catalogue(handoff: tuple, tmp_path: Path) -> None:
    dataset, split, slices, _ = handoff
    with pytest.raises(ValueError, match="item text vectors"):
        bench_peers.write_handoff(dataset, split, slices, np.zeros((3, 8)), set(), tmp_path, 42, 4.0)


def test_peer_scores_are_evaluated_by_the_projects_metrics(handoff: tuple, tmp_path: Path) -> None:
    """An oracle peer (its positives scored highest) gets NDCG 1 on every slice; the others are read as written."""
    _, _, slices, _ = handoff
    oracle, flat = {}, {}
    for n, s in enumerate(slices):
        scores = np.zeros((s.n_users, s.n_items), np.float32)
        for row, positives in enumerate(s.positives):
            scores[row, positives] = 1.0
        oracle[f"s{n}"] = scores
        flat[f"s{n}"] = np.zeros_like(scores)
    np.savez(tmp_path / "oracle.npz", **oracle)
    np.savez(tmp_path / "flat.npz", **{k: v for k, v in flat.items() if k != "s0"})  # flat skips the first slice
    scorers = bench_peers.peer_scores(slices, tmp_path, ["oracle", "flat", "absent"])
    frame = bench_peers.evaluate_peers(slices, scorers, 20)
    assert set(frame["kind"]) == {bench_peers.PEER}
    oracle_rows = frame[frame["ranker"] == "oracle"]
    assert len(oracle_rows) == len(slices)
    np.testing.assert_allclose(oracle_rows["ndcg@20"].to_numpy(), 1.0)
    assert slices[0].name not in set(frame.loc[frame["ranker"] == "flat", "slice"])
    assert "absent" not in set(frame["ranker"])


def test_a_score_matrix_of_the_wrong_length_is_refused(handoff: tuple) -> None:
    _, _, slices, _ = handoff
    s = slices[0]
    with pytest.raises(ValueError, match="score rows"):
        bench_peers.MatrixScorer("bad", s.queries, np.zeros((s.n_users + 1, s.n_items)))


def test_slice_kinds() -> None:
    kinds = [peers_ml100k.kind_of(n) for n in ("cold-user@0", "cold-user@0+text", "cold-user@5", "cold-item", "warm")]
    assert kinds == ["profile", "profile", "fold", "content", "warm"]
    with pytest.raises(ValueError, match="unknown slice"):
        peers_ml100k.kind_of("lukewarm")


def test_mean_interval_is_the_t_interval_over_seeds() -> None:
    mean, half = bench_peers.mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # t(0.975, 4) = 2.7764451, sd = sqrt(2.5), n = 5
    assert mean == pytest.approx(3.0)
    assert half == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert bench_peers.mean_interval([0.3, float("nan"), 0.5])[0] == pytest.approx(0.4)
    one = bench_peers.mean_interval([0.7])
    assert one[0] == 0.7 and math.isnan(one[1])
    assert all(math.isnan(v) for v in bench_peers.mean_interval([]))


def test_mean_table_and_best_of_each_kind() -> None:
    frames = [
        pd.DataFrame(
            {
                "slice": ["warm"] * 3,
                "ranker": ["als", "ease", "model"],
                "kind": ["baseline", "peer", "model"],
                "ndcg@20": [0.1 + d, 0.2 + d, 0.3 + d],
            }
        )
        for d in (0.0, 0.02)
    ]
    table, long = bench_peers.mean_table(frames)
    assert list(table["ranker"]) == ["als", "ease", "model"]
    assert table.loc[table["ranker"] == "ease", "warm"].item().startswith("0.2100 ±")
    best = bench_peers.best_table(long)
    assert best["best peer"].item().startswith("ease 0.2100")
    assert best["model / best peer"].item() == f"{0.31 / 0.21:.2f}x"
    assert best[bench_peers.RATIO].item() == pytest.approx(0.31 / 0.11)
    frames[1].loc[frames[1]["ranker"] == "ease", "ndcg@20"] = 0.5  # the peer ahead on the second seed
    assert bench_peers.seeds_ahead(frames) == {"warm": "1/2"}


@pytest.mark.slow
@pytest.mark.skipif(not PEERS_PYTHON.exists(), reason="no peers environment (make bench/out/peers-venv/.installed)")
def test_peers_runner_scores_every_slice_it_serves(handoff: tuple, tmp_path: Path) -> None:
    _, _, slices, folder = handoff
    proc = subprocess.run(
        [str(PEERS_PYTHON), str(ROOT / "bench/peers_ml100k.py"), str(folder), str(tmp_path), "--peers", "ease,als"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    for peer in ("ease", "als"):
        assert "error" not in report["peers"][peer], report["peers"][peer]
        with np.load(tmp_path / f"{peer}.npz") as z:
            served = {s.name for n, s in enumerate(slices) if f"s{n}" in z}
            assert served == {s.name for s in slices if peers_ml100k.kind_of(s.name) in ("fold", "warm")}
            for n, s in enumerate(slices):
                if f"s{n}" in z:
                    assert z[f"s{n}"].shape == (s.n_users, s.n_items)


def test_peers_runner_refuses_an_unknown_peer(tmp_path: Path) -> None:
    if not PEERS_PYTHON.exists():
        pytest.skip("no peers environment (make bench/out/peers-venv/.installed)")
    proc = subprocess.run(
        [str(PEERS_PYTHON), str(ROOT / "bench/peers_ml100k.py"), str(tmp_path), str(tmp_path), "--peers", "svd"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "unknown ['svd']" in proc.stderr

"""Data-parallel finetune (`model.distributed`): 2 CPU processes on gloo under torchrun, on the session's tiny stages.

The stage must write a bundle that loads and recommends, the two ranks must end with the same weights (each
rank's digest of its state dict, gathered by rank 0 into the result's info: they differ unless the gradients
are averaged, as each rank trains on its own pairs with its own draws), a failed rank must fail the stage with
its error and leave no output, and the config must refuse what torchrun cannot run.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_tasks.artifacts import StageResult
from recsys_tasks.config import ConfigError, FinetuneConfig, PipelineConfig
from recsys_tasks.data.split import Split
from recsys_tasks.model.distributed import RankFailed, Ranks, state_digest, torchrun_command
from recsys_tasks.model.finetune import finetune

TWO = {"processes": 2, "backend": "gloo", "batch_size": 2}  # 8 fitted pairs: 4 steps a pass, 2 on each rank


def _config(tiny_finetune_config: FinetuneConfig, **changes: object) -> FinetuneConfig:
    return FinetuneConfig(**{**tiny_finetune_config.__dict__, **changes})


def _stage(cfg: FinetuneConfig, snapshot: str | Path, tiny_kg, tiny_text, tiny_bert: str, out: Path) -> StageResult:
    return finetune(cfg, snapshot, tiny_kg.out_dir, tiny_text.out_dir, out, tiny_bert)


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"processes": 0}, r"'finetune.processes': 0 is invalid; expected at least 1"),
        ({"nnodes": 0}, r"'finetune.nnodes': 0 is invalid"),
        ({"backend": "mpi"}, r"'finetune.backend': 'mpi' is invalid; expected 'auto', 'gloo' or 'nccl'"),
        ({"backend": "nccl", "device": "cpu"}, r"'finetune.backend'.*'nccl' needs CUDA"),
        ({"nnodes": 2}, r"'finetune.rdzv_endpoint': '' is invalid; expected 'host:port'"),
        ({"nnodes": 2, "rdzv_endpoint": "node0"}, r"'finetune.rdzv_endpoint': 'node0' is invalid"),
        ({"nnodes": 2, "rdzv_endpoint": "node0:70000"}, r"'finetune.rdzv_endpoint': 'node0:70000' is invalid"),
        ({"rdzv_endpoint": "node0:29400"}, r"'finetune.rdzv_endpoint'.*empty with one node"),
    ],
)
def test_the_config_refuses_what_torchrun_cannot_run(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FinetuneConfig(**changes)


def test_the_keys_come_from_overrides_and_a_typo_is_named() -> None:
    cfg = PipelineConfig().with_overrides(
        ["finetune.processes=4", "finetune.nnodes=2", "finetune.rdzv_endpoint=n0:29400"]
    )
    assert (cfg.finetune.processes, cfg.finetune.nnodes, cfg.finetune.rdzv_endpoint) == (4, 2, "n0:29400")
    with pytest.raises(ConfigError, match=r"'finetune.processes': cannot use 'two' as int"):
        PipelineConfig().with_overrides(["finetune.processes=two"])


def test_nccl_without_cuda_fails_before_any_process_starts(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: NCCL can run")
    with pytest.raises(ValueError, match="'nccl' needs CUDA"):
        finetune(FinetuneConfig(processes=2, backend="nccl"), tmp_path, tmp_path, tmp_path, tmp_path / "out", "m")
    assert list(tmp_path.iterdir()) == []


def test_several_nodes_meet_at_node_0s_endpoint(tmp_path: Path) -> None:
    """Node 0 (the stage's) holds ranks 0 .. processes - 1; another node joins by its node rank."""
    cfg = FinetuneConfig(processes=4, nnodes=2, rdzv_endpoint="node0:29400")
    job = tmp_path / "job.json"
    here, there = torchrun_command(cfg, job), torchrun_command(cfg, job, node_rank=1)
    assert here[1:4] == ["-m", "torch.distributed.run", "--nproc-per-node"] and "--standalone" not in here
    for command, node in ((here, "0"), (there, "1")):
        flags = dict(zip(command[3:-3:2], command[4:-3:2]))
        assert flags["--nnodes"] == "2" and flags["--node-rank"] == node and flags["--nproc-per-node"] == "4"
        assert flags["--rdzv-backend"] == "static" and flags["--rdzv-endpoint"] == "node0:29400"
        assert command[-3:] == ["-m", "recsys_tasks.model.distributed", str(job)]
    assert "--standalone" in torchrun_command(FinetuneConfig(processes=2), job)


# ---------------------------------------------------------------- the shares of an epoch
def test_the_ranks_share_out_each_epoch_and_take_as_many_steps(
    tiny_snapshot: StageResult, tiny_bundle: StageResult
) -> None:
    """With the same order draws, 5 ranks' shares of an epoch cover every pair, each as long (the permutation
    wrapped round by at most ranks - 1 pairs), and a rank alone gets the whole permutation unchanged."""
    from recsys_tasks.data.dataset import Dataset
    from recsys_tasks.model.batches import Batches
    from recsys_tasks.model.recommender import Recommender

    dataset, split = Dataset.load(tiny_snapshot.out_dir), Split.load(tiny_snapshot.out_dir)
    rec = Recommender.load(tiny_bundle.path("bundle"))
    cfg = FinetuneConfig(batch_size=2, max_history=5)

    def batches(rank: int, world: int) -> Batches:
        shared = np.random.default_rng(3)
        return Batches(rec, split.train, dataset, cfg, 4.0, np.random.default_rng(rank), (rank, world), shared)

    alone = batches(0, 1)
    n = alone.n_pairs
    assert n % 5 != 0  # the shares must wrap round
    assert np.array_equal(alone.order(), np.random.default_rng(3).permutation(n))
    shares = [batches(rank, 5).order() for rank in range(5)]
    assert {len(s) for s in shares} == {math.ceil(n / 5)}
    together = np.concatenate(shares)
    assert set(together) == set(range(n)) and len(together) - n < 5
    assert len({len(list(batches(rank, 5).epoch())) for rank in range(5)}) == 1


def test_each_rank_draws_from_its_own_seed_and_takes_its_share_of_a_round() -> None:
    """Distinct seeds per rank (histories, masks, negatives), the same for the same rank; a round of 5 steps is
    3 on each of 2 ranks, whole passes stay whole passes (0)."""
    ranks = [Ranks(rank, 2, rank, torch.device("cpu")) for rank in range(2)]
    assert ranks[0].seed(42) != ranks[1].seed(42) and ranks[0].seed(42) != ranks[0].seed(7)
    assert ranks[1].seed(42) == Ranks(1, 2, 0, torch.device("cpu")).seed(42)
    assert [r.share(5) for r in ranks] == [3, 3] and ranks[0].share(0) == 0


# ---------------------------------------------------------------- two processes on gloo
@pytest.fixture(scope="module")
def two_ranks(
    tiny_snapshot: StageResult,
    tiny_kg: StageResult,
    tiny_text: StageResult,
    tiny_bert: str,
    tiny_finetune_config: FinetuneConfig,
    tmp_path_factory: pytest.TempPathFactory,
) -> StageResult:
    """The tiny finetune on 2 CPU processes (gloo), shared by this module's tests (read only)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return _stage(
            _config(tiny_finetune_config, **TWO),
            tiny_snapshot.out_dir,
            tiny_kg,
            tiny_text,
            tiny_bert,
            tmp_path_factory.mktemp("two-ranks") / "finetune",
        )


@pytest.mark.slow
def test_two_processes_train_one_model_and_write_a_bundle_that_recommends(two_ranks: StageResult) -> None:
    from recsys_tasks.model.recommender import Recommender

    out = Path(two_ranks.out_dir)
    assert two_ranks.info["processes"] == 2 and two_ranks.info["backend"] == "gloo"
    assert StageResult.load(out).metrics == two_ranks.metrics
    assert sorted(p.name for p in out.parent.iterdir()) == ["finetune"]  # no job folder, no temp folder left
    saved = torch.load(two_ranks.path("bundle") / "model.pt", weights_only=True)["state_dict"]
    digests = two_ranks.info["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1] == state_digest(saved)
    curves = pd.read_csv(two_ranks.path("curves"))
    assert list(curves["steps"]) == [2.0] * len(curves)  # 4 steps a pass, shared by 2 ranks
    assert np.isfinite(curves["loss"]).all()
    (answer,) = Recommender.load(two_ranks.path("bundle")).recommend(
        [{"request_id": "r", "profile": {"age": 30, "gender": "F", "occupation": "artist", "zip_code": "10111"}}],
        k=5,
    )
    assert len(answer["items"]) == 5


@pytest.mark.slow
def test_a_failed_rank_fails_the_stage_with_its_error_and_leaves_no_output(
    tiny_snapshot: StageResult,
    tiny_kg: StageResult,
    tiny_text: StageResult,
    tiny_bert: str,
    tiny_finetune_config: FinetuneConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = tmp_path / "snapshot"
    shutil.copytree(tiny_snapshot.out_dir, snapshot)
    parts = pd.read_parquet(snapshot / "split.parquet")
    parts["part"] = parts["part"].replace("train", "warm_test")  # the bad input: nothing to train on
    parts.to_parquet(snapshot / "split.parquet", index=False)
    out = tmp_path / "runs" / "finetune"
    with pytest.raises(RankFailed, match=r"rank [01] of 2 failed: ValueError: .*training part is empty") as failed:
        _stage(_config(tiny_finetune_config, **TWO), snapshot, tiny_kg, tiny_text, tiny_bert, out)
    assert "its log ended:" in str(failed.value) and "Traceback" in str(failed.value)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no job folder, no temp folder

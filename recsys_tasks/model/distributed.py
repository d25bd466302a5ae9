"""Data-parallel finetune: the stage under torchrun, one DistributedDataParallel process per device.

`launch` is the finetune stage past one process (``finetune.processes`` per node, ``finetune.nnodes``
nodes): it writes the job beside ``out_dir``, runs ``python -m torch.distributed.run`` on this module,
relays its output to the log and, once every rank has finished, moves rank 0's output into ``out_dir``
atomically; a failed rank fails the stage with its error and the end of its log, ``out_dir`` left as
it was. `main` is each torchrun worker: it joins the process group (NCCL on CUDA, gloo on the CPU)
and trains with its `Ranks` (`finetune.train`): the model wrapped in DistributedDataParallel, so each
step's gradients are averaged over the ranks; each rank on its share of every epoch with its own draws;
rank 0 validates and sends the figures to all, so every rank stops at the same epoch; only rank 0 goes
on to the content map, the fusion and the bundle (docs/decisions/0017-data-parallel-training.md).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from recsys_tasks.artifacts import StageResult, atomic_dir, read_json, write_json
from recsys_tasks.config import FinetuneConfig, PipelineConfig
from recsys_tasks.processes import process_tree, stop_processes

__all__ = ["RankFailed", "Ranks", "backend_for", "launch", "main", "state_digest", "torchrun_command"]

log = logging.getLogger(__name__)
T = TypeVar("T")
ENTRY = "recsys_tasks.model.distributed"
TAIL_LINES = 30  # of a failed rank's log, in the stage's error


class RankFailed(RuntimeError):
    """A training process (or torchrun itself) failed: the message holds its error and the end of its log."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: ``rank`` of ``world``, ``local_rank`` on its node, and the ``device``
    it trains on (where NCCL's collectives run too)."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    def seed(self, seed: int) -> int:
        """This rank's seed from the run's: its batches, DropoutNet masks and negatives differ from the others'."""
        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])

    def share(self, steps: int) -> int:
        """This rank's steps of a round of ``steps`` (0: whole passes, which `Batches.order` shares out)."""
        return -(-steps // self.world)

    def wrap(self, model: torch.nn.Module, step_loss: Callable[[Any, Any], torch.Tensor]) -> torch.nn.Module:
        """``batch -> step_loss(model, batch)`` as a DistributedDataParallel module: its backward averages
        every parameter's gradient over the ranks (and its construction sends rank 0's weights to all).
        Every parameter is in every step's graph (the ablations zero inputs, they skip no module), so no
        search for unused ones; the one buffer is the constant input mask, so none is broadcast."""
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            _StepModule(model, step_loss),
            device_ids=[self.device] if self.device.type == "cuda" else None,
            broadcast_buffers=False,
            find_unused_parameters=False,
        )

    def mean(self, values: list[float]) -> float:
        """The mean of every rank's ``values`` (an epoch's step losses)."""
        total = torch.tensor([sum(values), len(values)], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return float(total[0] / total[1])

    def from_rank0(self, compute: Callable[[], T]) -> T:
        """``compute()`` on rank 0, its value sent to every rank (one validation, one early-stopping decision)."""
        box = [compute() if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def one_model(self, model: torch.nn.Module) -> dict[str, Any]:
        """Every rank's digest of its weights, gathered; an error where they differ (the ranks did not train
        one model); the stage's info on the group otherwise."""
        digests: list[Any] = [None] * self.world
        dist.all_gather_object(digests, state_digest(model.state_dict()))
        if len(set(digests)) > 1:
            raise RuntimeError(f"finetune: the {self.world} ranks ended training with different weights: {digests}")
        return {"processes": self.world, "backend": dist.get_backend(), "rank_digests": digests}


class _StepModule(torch.nn.Module):
    """The training loss as a module's ``forward(batch)``: what DistributedDataParallel wraps."""

    def __init__(self, model: torch.nn.Module, step_loss: Callable[[Any, Any], torch.Tensor]):
        super().__init__()
        self.model, self.step_loss = model, step_loss

    def forward(self, batch: Any) -> torch.Tensor:
        return self.step_loss(self.model, batch)


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names and bytes, in name order: equal digests, equal weights."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def backend_for(cfg: FinetuneConfig) -> tuple[str, str]:
    """(device type, process-group backend) of ``cfg`` on this machine: ``auto`` is NCCL where the training
    runs on CUDA, gloo on the CPU."""
    cuda = torch.cuda.is_available()
    device = cfg.device if cfg.device != "auto" else ("cuda" if cuda else "cpu")
    device_type = torch.device(device).type
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device_type == "cuda" else "gloo")
    if backend == "nccl" and (device_type != "cuda" or not cuda):
        raise ValueError(f"finetune.backend 'nccl' needs CUDA; this process trains on {device!r} (use 'gloo')")
    return device_type, backend


def torchrun_command(cfg: FinetuneConfig, job: Path, node_rank: int = 0) -> list[str]:
    """Node ``node_rank``'s torchrun command for ``job``: one node standalone (a free local port); several by
    static rendezvous at ``cfg.rdzv_endpoint``, node 0 (this one) holding ranks 0 .. processes - 1."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(cfg.processes)]
    command += ["--max-restarts", "0"]  # a failed rank fails the stage (Airflow retries the task)
    if cfg.nnodes == 1:
        command += ["--standalone", "--nnodes", "1"]
    else:
        command += ["--nnodes", str(cfg.nnodes), "--node-rank", str(node_rank)]
        command += ["--rdzv-backend", "static", "--rdzv-endpoint", cfg.rdzv_endpoint]
    return [*command, "-m", ENTRY, str(job)]


def launch(
    cfg: FinetuneConfig,
    snapshot_dir: str | Path,
    kg_dir: str | Path,
    text_dir: str | Path,
    out_dir: str | Path,
    text_model: str,
    positive_threshold: float = 4.0,
) -> StageResult:
    """The finetune stage on ``cfg.processes`` x ``cfg.nnodes`` processes (see the module's docstring): rank 0's
    `StageResult`, its output in ``out_dir``; `RankFailed` with the failed rank's error otherwise."""
    device_type, _ = backend_for(cfg)  # a wrong backend fails here, before any process starts
    if device_type == "cuda" and torch.cuda.device_count() < cfg.processes:
        raise ValueError(
            f"finetune.processes={cfg.processes}: one process per GPU, and this node has {torch.cuda.device_count()}"
        )
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.ddp-{uuid.uuid4().hex[:8]}"  # beside out_dir: shared by every node
    work.mkdir()
    try:
        job = write_json(
            work / "job.json",
            {
                "cfg": asdict(cfg),
                "snapshot_dir": str(Path(snapshot_dir).resolve()),
                "kg_dir": str(Path(kg_dir).resolve()),
                "text_dir": str(Path(text_dir).resolve()),
                "out_dir": str((work / "out").resolve()),
                "text_model": text_model,
                "positive_threshold": positive_threshold,
            },
        ).resolve()
        for node in range(1, cfg.nnodes):
            log.info("finetune: waiting for node %d; run there: %s", node, " ".join(torchrun_command(cfg, job, node)))
        rc, output = _run(torchrun_command(cfg, job), cfg.processes)
        if rc != 0:
            raise RankFailed(_failure(work, rc, output, cfg.processes * cfg.nnodes))
        produced = work / "out"
        if not (produced / "result.json").is_file():
            raise RankFailed(
                f"finetune: torchrun succeeded but rank 0 wrote no output in {produced} "
                "(several nodes: the workdir must be on a filesystem every node shares)"
            )
        with atomic_dir(out) as tmp:
            for child in produced.iterdir():
                os.replace(child, tmp / child.name)
        return StageResult.load(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(command: list[str], processes: int) -> tuple[int, list[str]]:
    """Run torchrun, each line of its output (every local rank's log) relayed to this log; (exit code, its
    last lines). Its process tree is stopped if this process is interrupted."""
    env = dict(os.environ)
    # torchrun would set 1 thread per process; the node's cores shared out instead
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    log.info("finetune: %s", " ".join(command))
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line.rstrip("\n"))
            log.info("torchrun: %s", tail[-1])
        return process.wait(), list(tail)
    finally:
        if process.poll() is None:
            stop_processes(process_tree(process.pid))


def _failure(work: Path, rc: int, output: list[str], world: int) -> str:
    """The stage's error: the first rank to fail (its error file), its error and the end of its log; without
    one (a rank killed, torchrun's own error) torchrun's exit code and the end of its output."""
    errors = sorted(work.glob("rank-*.error"), key=lambda p: p.stat().st_mtime_ns)
    if not errors:
        return f"finetune: torchrun exited with {rc} and no rank reported an error; its output ended:\n" + "\n".join(
            output
        )
    rank = errors[0].name.removeprefix("rank-").removesuffix(".error")
    logged = work / f"rank-{rank}.log"
    lines = logged.read_text(errors="replace").splitlines()[-TAIL_LINES:] if logged.is_file() else output
    return f"finetune: rank {rank} of {world} failed: {errors[0].read_text().strip()}\nits log ended:\n" + "\n".join(
        lines
    )


def main(argv: list[str] | None = None) -> int:
    """One torchrun worker: join the process group and train this rank's part of the job (the one argument,
    the job file `launch` wrote); an error is written beside the job for `launch` to report."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit(f"usage: python -m torch.distributed.run ... -m {ENTRY} JOB.json")
    missing = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if k not in os.environ]
    if missing:
        raise SystemExit(f"{ENTRY}: run it under torchrun ({', '.join(missing)} unset)")
    job_file = Path(args[0])
    rank, world, local_rank = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    _log_to(job_file.parent / f"rank-{rank}.log", rank)
    try:
        job = read_json(job_file)
        cfg = PipelineConfig.from_dict({"finetune": job["cfg"]}).finetune
        device_type, backend = backend_for(cfg)
        device = torch.device("cuda", local_rank) if device_type == "cuda" else torch.device(device_type)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)  # env://: torchrun's MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE
        try:
            from recsys_tasks.model.finetune import train

            train(
                cfg,
                job["snapshot_dir"],
                job["kg_dir"],
                job["text_dir"],
                job["out_dir"],
                job["text_model"],
                job["positive_threshold"],
                ranks=Ranks(rank, world, local_rank, device),
            )
        finally:
            dist.destroy_process_group()
    except BaseException as exc:
        (job_file.parent / f"rank-{rank}.error").write_text(f"{type(exc).__name__}: {exc}\n")
        log.exception("finetune: rank %d of %d failed", rank, world)
        raise
    return 0


def _log_to(path: Path, rank: int) -> None:
    """This worker's log, to stderr (which torchrun passes on to the stage) and to ``path`` (its error's tail)."""
    fmt = logging.Formatter(f"%(asctime)s rank {rank} %(name)s %(levelname)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(path)):
        handler.setFormatter(fmt)
        root.addHandler(handler)


if __name__ == "__main__":
    sys.exit(main())

"""The whole workflow on generated data at growing sizes: per stage, seconds, peak RSS and growth exponent.

For each size, `bench/synthetic.py` writes RecBole atomic files (cached in the workdir by size and seed),
then every stage of `recsys_tasks.stages.STAGES` runs in a fresh Python process (the way Airflow workers run
tasks, so each stage's peak RSS is its own) with the default config, 2% of the users and 2% of the items
held out. A stage past ``--stage-timeout`` (or past what is left of ``--budget``) is stopped and reported
as such; the stages after it, and the larger sizes, are then skipped. Printed: a table per stage (seconds
and peak RSS at each size, and the log-log slope of seconds against interactions between sizes), the
evaluation's slice table at each size and, with ``--peers PYTHON`` (an interpreter with LightFM, see
bench/requirements-peers.txt), `bench/peers.py` on the same files and the same held-out users and items.

    python bench/bench_scale.py [--sizes 1M,5M,25M] [--workdir DIR] [--set key=value ...] [--peers PYTHON]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (users, items) per number of interactions: the shapes (25M is MovieLens-25M's)
SHAPES = {
    200_000: (5_000, 2_000),
    1_000_000: (20_000, 5_000),
    5_000_000: (100_000, 20_000),
    25_000_000: (162_000, 62_000),
}
HOLDOUT = ("extract.cold_user_frac=0.02", "extract.cold_item_frac=0.02")
# One stage of recsys_tasks.stages.STAGES in this process, its inputs read back from the run directory; its log lines
# (timestamped: where a stage's time goes) in <stage>.log.
STAGE = (
    "import json, logging, sys; from pathlib import Path; "
    "logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s %(message)s'); "
    "from recsys_tasks.artifacts import StageResult; "
    "from recsys_tasks.config import PipelineConfig; from recsys_tasks.stages import BY_NAME, RunContext, run_stage; "
    "cfg = PipelineConfig().with_overrides(json.loads(sys.argv[1])); base = Path(sys.argv[2]); "
    "stage = BY_NAME[sys.argv[3]]; inputs = {n: StageResult.load(base / n) for n in stage.needs}; "
    "result = run_stage(stage, RunContext(cfg, 'scale', base), inputs); "
    "(base / stage.name).mkdir(parents=True, exist_ok=True); "
    "(base / stage.name / 'result.json').exists() or (base / stage.name / 'result.json').write_text("
    "json.dumps(result.to_dict()))"
)
NEW_USERS, NEW_ITEMS, WARM = "cold-user@0", "cold-item", "warm"


@dataclass
class StageRun:
    stage: str
    status: str  # ok, failed, timed out, skipped
    seconds: float = math.nan
    rss_mib: float = math.nan
    note: str = ""


@dataclass
class SizeRun:
    interactions: int
    users: int
    items: int
    data_dir: str
    generate_seconds: float = math.nan
    stages: list[StageRun] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    table: str = ""
    peers: str = ""
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def finished(self) -> bool:
        return bool(self.stages) and all(s.status == "ok" for s in self.stages)


def parse_size(text: str) -> tuple[int, int, int]:
    """``"5M"`` -> (5_000_000, 100_000, 20_000) (the issue's shapes; other sizes: 50 interactions per user and
    200 per item); ``"50k:1000:400"`` names the users and items too."""
    parts = text.strip().split(":")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", parts[0])
    if not match or len(parts) not in (1, 3):
        raise argparse.ArgumentTypeError(f"size {text!r}: expected e.g. 50k, 1M, 25M or 50k:1000:400")
    n = int(float(match[1]) * {"": 1, "k": 1_000, "m": 1_000_000}[match[2].lower()])
    if len(parts) == 3:
        if not (parts[1].isdigit() and parts[2].isdigit()):
            raise argparse.ArgumentTypeError(f"size {text!r}: users and items must be whole numbers")
        return n, int(parts[1]), int(parts[2])
    users, items = SHAPES.get(n, (max(100, n // 50), max(200, n // 200)))
    return n, users, items


def run_stage(name: str, overrides: list[str], base: Path, env: dict[str, str], timeout: float) -> StageRun:
    """One stage in its own process (its own session, so a timeout stops all it started): seconds and peak RSS."""
    log = base / f"{name}.log"
    base.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", STAGE, json.dumps(overrides), str(base), name],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                return StageRun(
                    name, "timed out", time.perf_counter() - start, usage.ru_maxrss / 1024, f"> {timeout:.0f} s"
                )
            time.sleep(0.5)
    seconds = time.perf_counter() - start
    rss = usage.ru_maxrss / 1024  # Linux reports KiB
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log.read_text()[-1500:].strip().splitlines()
        return StageRun(name, "failed", seconds, rss, f"exit {code}: {tail[-1] if tail else ''} (log {log})")
    return StageRun(name, "ok", seconds, rss)


def run_peers(python: str, data: Path, extract_dir: Path, timeout: float) -> str:
    """`bench/peers.py` under ``python`` on the same files and the extract stage's held-out users and items."""
    try:
        proc = subprocess.run(
            [python, str(HERE / "peers.py"), "--data", str(data), "--split", str(extract_dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"peers: timed out after {timeout:.0f} s"
    except OSError as exc:
        return f"peers: cannot run {python}: {exc}"
    return proc.stdout if proc.returncode == 0 else f"peers failed: {proc.stderr[-1500:]}"


def generate(n: int, users: int, items: int, seed: int, root: Path) -> tuple[Path, float]:
    """The size's files, generated once per (size, seed) into ``root/data``; the seconds it took (0 if cached)."""
    folder = root / "data" / f"{n}_{users}_{items}_s{seed}"
    if (folder / "spec.json").exists():
        return folder, 0.0
    start = time.perf_counter()
    staging = folder.with_name(folder.name + ".partial")
    subprocess.run(
        [sys.executable, str(HERE / "synthetic.py"), "--interactions", str(n), "--users", str(users)]
        + ["--items", str(items), "--out", str(staging), "--seed", str(seed)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    staging.rename(folder)
    return folder, time.perf_counter() - start


def run_size(
    n: int, users: int, items: int, args: argparse.Namespace, root: Path, env: dict[str, str], deadline: float
) -> SizeRun:
    from recsys_tasks.stages import STAGES

    data, gen_seconds = generate(n, users, items, args.seed, root)
    run = SizeRun(n, users, items, str(data), gen_seconds)
    print(f"\n== {n:,} interactions, {users:,} users, {items:,} items ({data}; generated in {gen_seconds:.0f} s)")
    overrides = [f"extract.source={data}", *HOLDOUT, *args.set]
    base = root / f"scale_{n}" / "runs" / "scale"
    # each size its own workdir, so its own MLflow store: register compares champions on the same data only
    env = {**env, "RECSYS_WORKDIR": str(root / f"scale_{n}")}
    stopped = ""
    for stage in STAGES:
        if stopped:
            run.stages.append(StageRun(stage.name, "skipped", note=stopped))
            continue
        left = min(args.stage_timeout, deadline - time.perf_counter())
        if left <= 0:
            run.stages.append(StageRun(stage.name, "skipped", note="budget spent"))
            stopped = "budget spent"
            continue
        result = run_stage(stage.name, overrides, base, env, left)
        run.stages.append(result)
        print(
            f"  {stage.name:<11} {result.status:<9} {result.seconds:8.1f} s {result.rss_mib:8.0f} MiB  {result.note}",
            flush=True,
        )
        if result.status != "ok":
            stopped = f"{stage.name} {result.status}"
        elif stage.name == args.until:
            stopped = f"not asked (--until {args.until})"
    evaluated = base / "evaluate" / "result.json"
    if not stopped and evaluated.exists():
        result_json = json.loads(evaluated.read_text())
        run.metrics = {k: float(v) for k, v in result_json.get("metrics", {}).items()}
        run.table = str(result_json.get("info", {}).get("table", ""))
    if args.peers and (base / "extract" / "split.json").exists():
        run.peers = run_peers(args.peers, data, base / "extract", max(60.0, deadline - time.perf_counter()))
        print(run.peers, flush=True)
    run.load = os.getloadavg()
    return run


def exponent(a: StageRun, b: StageRun, na: int, nb: int) -> float:
    """log-log slope of seconds against interactions between two sizes (nan unless both finished)."""
    if a.status != "ok" or b.status != "ok" or a.seconds <= 0 or b.seconds <= 0:
        return math.nan
    return math.log(b.seconds / a.seconds) / math.log(nb / na)


def _size_label(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k"


def _cell(run: StageRun) -> tuple[str, str]:
    if run.status == "ok":
        return f"{run.seconds:.1f}", f"{run.rss_mib:.0f}"
    if run.status == "timed out":
        return f"timed out ({run.note})", f"{run.rss_mib:.0f}"
    if run.status == "failed":
        return "failed", f"{run.rss_mib:.0f}"
    return "-", "-"


def report(runs: list[SizeRun]) -> str:
    """The per-stage table (seconds, peak RSS, growth exponents) and each size's slice metrics."""
    lines = []
    labels = [_size_label(r.interactions) for r in runs]
    head = ["stage"] + [f"{lab} s" for lab in labels] + [f"{lab} MiB" for lab in labels]
    head += [f"exp {labels[i]}->{labels[i + 1]}" for i in range(len(runs) - 1)]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    names = [s.stage for s in runs[0].stages] if runs else []
    for j, name in enumerate(names):
        cells = [_cell(r.stages[j]) for r in runs]
        exps = [
            exponent(runs[i].stages[j], runs[i + 1].stages[j], runs[i].interactions, runs[i + 1].interactions)
            for i in range(len(runs) - 1)
        ]
        row = [name] + [c[0] for c in cells] + [c[1] for c in cells] + [f"{e:.2f}" if e == e else "-" for e in exps]
        lines.append("| " + " | ".join(row) + " |")
    totals = []
    for r in runs:
        done = [s for s in r.stages if s.status == "ok"]
        total = sum(s.seconds for s in done)
        totals.append(
            (
                f"{total:.1f}" + ("" if r.finished else " (unfinished)"),
                f"{max((s.rss_mib for s in r.stages if s.rss_mib == s.rss_mib), default=0):.0f}",
            )
        )
    exps = []
    for i in range(len(runs) - 1):
        a, b = runs[i], runs[i + 1]
        if a.finished and b.finished:
            ta, tb = sum(s.seconds for s in a.stages), sum(s.seconds for s in b.stages)
            exps.append(f"{math.log(tb / ta) / math.log(b.interactions / a.interactions):.2f}")
        else:
            exps.append("-")
    lines.append("| **workflow** | " + " | ".join([t[0] for t in totals] + [t[1] for t in totals] + exps) + " |")
    lines.append("")
    lines.append(
        "| size | users / items | generate s | new users NDCG@20 model / best baseline "
        "| new items NDCG@20 model / best baseline | warm NDCG@20 model | load avg (1, 5, 15 min) |"
    )
    lines.append("|---|---|---:|---|---|---:|---|")
    for r, lab in zip(runs, labels, strict=True):
        m = r.metrics

        def pair(name: str, m: dict[str, float] = m) -> str:
            model, best = m.get(f"{name}/ndcg/model"), m.get(f"{name}/ndcg/best_baseline")
            return f"{model:.4f} / {best:.4f}" if model is not None and best is not None else "-"

        warm = m.get(f"{WARM}/ndcg/model")
        lines.append(
            f"| {lab} | {r.users:,} / {r.items:,} | {r.generate_seconds:.0f} | {pair(NEW_USERS)} | {pair(NEW_ITEMS)} | "
            f"{'-' if warm is None else f'{warm:.4f}'} | {', '.join(f'{x:.1f}' for x in r.load)} |"
        )
    for r, lab in zip(runs, labels, strict=True):
        if r.table:
            lines += ["", f"slices at {lab} ({r.interactions:,} interactions):", r.table.rstrip()]
        if r.peers:
            lines += ["", f"peers at {lab} (same files, same held-out users and items):", r.peers.rstrip()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from recsys_tasks.stages import STAGES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default="1M,5M,25M",
        type=lambda s: [parse_size(p) for p in s.split(",") if p.strip()],
        help="comma-separated: 50k, 200k, 1M, 5M, 25M, or N:USERS:ITEMS (default 1M,5M,25M)",
    )
    parser.add_argument("--workdir", help="default: a temporary directory (generated data is cached here)")
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--stage-timeout", type=float, default=5400.0, help="seconds one stage may take")
    parser.add_argument("--budget", type=float, default=6 * 3600.0, help="seconds the whole benchmark may take")
    parser.add_argument("--peers", metavar="PYTHON", help="an interpreter with bench/requirements-peers.txt")
    parser.add_argument(
        "--until", choices=[s.name for s in STAGES], help="the last stage to run (e.g. inputs for a step benchmark)"
    )
    parser.add_argument("--keep-going", action="store_true", help="run larger sizes after one did not finish")
    args = parser.parse_args(argv)
    if not args.sizes:
        parser.error("--sizes: no size given")
    if args.stage_timeout <= 0 or args.budget <= 0:
        parser.error("--stage-timeout and --budget must be positive")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="recsys-scale-")).resolve()
    env = {**os.environ, "RECSYS_WORKDIR": str(root), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    deadline = time.perf_counter() + args.budget
    print(f"load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    runs: list[SizeRun] = []
    for n, users, items in sorted(args.sizes):
        if runs and not runs[-1].finished and not args.keep_going:
            print(f"\n== {n:,} interactions: skipped ({_size_label(runs[-1].interactions)} did not finish)")
            continue
        runs.append(run_size(n, users, items, args, root, env, deadline))
    print()
    print(report(runs))
    out = root / "bench_scale.json"
    out.write_text(json.dumps([asdict(r) for r in runs], indent=1, default=str))
    print(f"\nworkdir: {root}  (results: {out})")


if __name__ == "__main__":
    main()

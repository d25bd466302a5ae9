"""Per-stage wall time and peak memory of the full workflow on MovieLens-100K.

Each stage runs in a fresh Python process (the way Airflow workers run tasks), so its peak
RSS is its own; the figures are compared with the whole-DAG target (300 s on a 2-core
machine) and, as a baseline measured in the same run on the same split, with fitting and
scoring the protocol's ALS baseline (the classic collaborative model the hybrid replaces).

    python bench/bench_pipeline.py [--workdir DIR] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 300.0
# Each stage of recsys_tasks.stages.STAGES in its own process, its inputs read back from the run directory.
STAGE = (
    "import json, sys; from pathlib import Path; from recsys_tasks.artifacts import StageResult; "
    "from recsys_tasks.config import PipelineConfig; from recsys_tasks.stages import BY_NAME, RunContext, run_stage; "
    "cfg = PipelineConfig().with_overrides(json.loads(sys.argv[1])); base = Path(sys.argv[2]); "
    "stage = BY_NAME[sys.argv[3]]; inputs = {n: StageResult.load(base / n) for n in stage.needs}; "
    "result = run_stage(stage, RunContext(cfg, 'bench', base), inputs); "
    "(base / stage.name).mkdir(parents=True, exist_ok=True); "
    "(base / stage.name / 'result.json').exists() or (base / stage.name / 'result.json').write_text("
    "json.dumps(result.to_dict()))"
)
BASELINE_ALS = (
    "import json, sys; from pathlib import Path; from recsys_tasks.config import PipelineConfig; "
    "from recsys_tasks.data.dataset import Dataset; from recsys_tasks.data.split import Split; "
    "from recsys_tasks.evaluation.baselines import ALSFoldIn; from recsys_tasks.protocol.slices import build_slices; "
    "cfg = PipelineConfig().with_overrides(json.loads(sys.argv[1])); base = Path(sys.argv[2]); "
    "d, s = Dataset.load(base / 'extract'), Split.load(base / 'extract'); "
    "m = ALSFoldIn(d.items['item_id'].tolist(), s.train, cfg.evaluate.als_factors, "
    "cfg.evaluate.als_iterations, cfg.evaluate.als_regularization, cfg.evaluate.seed); "
    "[m.score(x.queries) for x in build_slices(d, s, cfg.evaluate, cfg.extract.positive_threshold)]"
)


def run_stage(name: str, overrides: list[str], base: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one stage (or the ALS baseline) in its own process."""
    code = BASELINE_ALS if name == "baseline_als" else STAGE
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(overrides), str(base), name],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {name} failed:\n{proc.stderr.read()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", help="default: a temporary directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="recsys-bench-")).resolve()
    env = {**os.environ, "RECSYS_WORKDIR": str(root), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    base = root / "runs" / "bench"
    rows = []
    from recsys_tasks.stages import STAGES

    for name in [stage.name for stage in STAGES] + ["baseline_als"]:
        seconds, rss = run_stage(name, args.set, base, env)
        rows.append((name, seconds, rss))
        print(f"{name:<13} {seconds:8.1f} s {rss:9.0f} MiB peak RSS", flush=True)
    workflow = [r for r in rows if r[0] != "baseline_als"]
    total = sum(r[1] for r in workflow)
    als = dict((r[0], r[1]) for r in rows)["baseline_als"]
    print()
    print("| stage | seconds | peak RSS (MiB) |")
    print("|---|---:|---:|")
    for name, seconds, rss in rows:
        print(f"| {name} | {seconds:.1f} | {rss:.0f} |")
    print(f"| **workflow total** (sequential) | {total:.1f} | {max(r[2] for r in workflow):.0f} |")
    print()
    print(
        f"target: whole DAG <= {TARGET_SECONDS:.0f} s -> {'met' if total <= TARGET_SECONDS else 'MISSED'} "
        f"({total / TARGET_SECONDS:.0%} of the budget)"
    )
    print(
        f"baseline (same run, same split): ALS fit + score every slice {als:.1f} s; "
        f"finetune {dict((r[0], r[1]) for r in rows)['finetune'] / als:.1f}x that"
    )
    print(f"workdir: {root}")


if __name__ == "__main__":
    main()

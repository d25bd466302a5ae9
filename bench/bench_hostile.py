"""The API under hostile but allowed input: is ``/health`` still quick, does memory stay flat?

Trains a tiny model of its own (the tests' tiny RecBole data, tiny dims, `run_pipeline`) unless
--workdir already holds one, starts ``recsys serve`` (uvicorn, one worker) on a loopback port, then:

a. ``/health`` latency (p50/p99/max), first alone (the baseline), then while 2 clients post the
   largest allowed ``/recommend/batch`` in a loop: ``max_batch_requests`` requests, each with the
   longest text that the limits allow (``MAX_TEXT``, or less where ``max_body_bytes`` binds first),
   genre-laden and new each round so that no sentence is cached. Target: p99 <= 100 ms.
b. The server's RSS (psutil) over --posts ``POST /items``: the first half replace a fixed set of
   ids (as many as ``--max-added-items``), the second half name new ids past the cap (refused, 409);
   sampled every --sample-every posts. Target: the last sample within 10% of the first after warm-up.

A benchmark, not a test: it prints figures and asserts nothing. Loopback only; every loop is
bounded in time or count, and the server is stopped at the end.

    python bench/bench_hostile.py [--workdir DIR] [--seconds 20] [--posts 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench_serving import _free_port, _stop  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "kg.embedding_dim": 4,
    "kg.epochs": 1,
    "kg.early_stopping_frequency": 1,
    "kg.eval_fraction": 0.1,
    "finetune.dim": 8,
    "finetune.hidden": 16,
    "finetune.epochs": 2,
}
GENRES = ["Action", "Comedy", "Drama", "Sci-Fi", "Romance", "Thriller", "Horror", "Western"]


# ---------------------------------------------------------------- the model and the server
def train(workdir: Path) -> None:
    """A tiny champion in ``workdir`` (its own SQLite store), unless it holds one already."""
    if (workdir / "mlflow.db").exists():
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_recbole_dir  # the tests' tiny data writer

    from recsys_tasks.config import PipelineConfig
    from recsys_tasks.pipeline import run_pipeline

    data = make_recbole_dir(workdir.parent / "data")
    for name in ("MLFLOW_TRACKING_URI", "RECSYS_WORKDIR"):
        os.environ.pop(name, None)
    cfg = PipelineConfig().with_overrides({"extract.source": str(data), **TINY})
    run_pipeline(cfg, workdir, run_id="bench-hostile")


def start_server(
    workdir: Path, serve_dir: Path, max_added_items: int, log: Path, request_timeout: float | None = None
) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RECSYS_API_KEY", "RECSYS_WORKDIR")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    args = [
        sys.executable,
        "-m",
        "recsys_tasks.cli",
        "serve",
        "--workdir",
        str(serve_dir),
        "--port",
        str(port),
        "--poll-seconds",
        "0",
        "--no-access-log",
        "--max-added-items",
        str(max_added_items),
    ]
    if request_timeout is not None:
        args += ["--request-timeout", str(request_timeout)]
    with log.open("w") as sink:
        process = subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"recsys serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.5)
    _stop(process)
    raise SystemExit("recsys serve not up after 600 s")


# ---------------------------------------------------------------- a. /health beside the largest batch
def largest_batch(n: int, text_chars: int, round_: int, client: int) -> bytes:
    """``n`` requests with genre-laden texts of ``text_chars`` characters, new in every round."""
    filler = " ".join(f"I like {g} and {GENRES[(i + 3) % len(GENRES)]} films." for i, g in enumerate(GENRES * 200))
    requests = []
    for i in range(n):
        head = f"round {round_} client {client} request {i}: "
        requests.append({"request_id": f"{client}-{round_}-{i}", "text": (head + filler)[:text_chars], "k": 20})
    return json.dumps(requests).encode()


def text_chars_that_fit(n: int, max_text: int, max_body: int) -> int:
    """The longest text (<= ``max_text``) for which a batch of ``n`` stays within ``max_body`` bytes."""
    overhead = len(largest_batch(n, 0, 999_999, 9))
    return max(0, min(max_text, (max_body - overhead) // n - 1))


def health_latencies(base: str, seconds: float, stop_at_count: int = 20_000) -> list[float]:
    """GET /health one after another (10 ms apart) for ``seconds``: each latency in ms."""
    import httpx

    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < deadline and len(latencies) < stop_at_count:
            start = time.perf_counter()
            client.get(f"{base}/health").raise_for_status()
            latencies.append((time.perf_counter() - start) * 1e3)
            time.sleep(0.01)
    return latencies


def batch_load(base: str, n: int, text_chars: int, client_id: int, stop: threading.Event, out: list) -> None:
    """Post the largest batch until ``stop``; appends (status, seconds) per batch to ``out``."""
    import httpx

    round_ = 0
    with httpx.Client(timeout=600) as client:
        while not stop.is_set():
            body = largest_batch(n, text_chars, round_, client_id)
            start = time.perf_counter()
            response = client.post(
                f"{base}/recommend/batch", content=body, headers={"content-type": "application/json"}
            )
            out.append((response.status_code, time.perf_counter() - start))
            round_ += 1


def summary(latencies: list[float]) -> str:
    if not latencies:
        return "no samples"
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    return f"n={len(ordered):5d}  p50={at(50):7.1f} ms  p99={at(99):7.1f} ms  max={ordered[-1]:7.1f} ms"


def phase_health(base: str, seconds: float, n: int, text_chars: int) -> None:
    print(
        f"a. /health, {seconds:.0f} s each; load: 2 clients x /recommend/batch of {n} requests, {text_chars} chars each"
    )
    print(f"   no load:   {summary(health_latencies(base, seconds))}")
    stop_load, batches = threading.Event(), []  # type: ignore[var-annotated]
    clients = [threading.Thread(target=batch_load, args=(base, n, text_chars, c, stop_load, batches)) for c in (0, 1)]
    for thread in clients:
        thread.start()
    time.sleep(min(5.0, seconds / 4))  # the first batches are in flight
    loaded = health_latencies(base, seconds)
    stop_load.set()
    for thread in clients:
        thread.join(timeout=600)  # the batch in flight finishes (bounded by the client's timeout)
    print(f"   with load: {summary(loaded)}   (target p99 <= 100 ms)")
    statuses = sorted({s for s, _ in batches})
    times = sorted(t for _, t in batches)
    median = times[len(times) // 2] if times else float("nan")
    print(f"   batches served: {len(batches)}, statuses {statuses}, median {median:.1f} s per batch")


# ---------------------------------------------------------------- b. RSS over POST /items
def phase_rss(base: str, pid: int, posts: int, every: int, fixed: int, log_file: Path) -> None:
    import httpx
    import psutil

    server = psutil.Process(pid)
    samples: list[tuple[int, float]] = []
    statuses: dict[int, int] = {}
    rng = random.Random(0)
    start = time.perf_counter()
    with httpx.Client(timeout=60) as client:
        for i in range(1, posts + 1):
            if i <= posts // 2:  # replace a fixed set of ids (the first round adds them)
                item_id = f"fixed-{(i - 1) % fixed}"
            else:  # new ids past the cap: refused
                item_id = f"over-{i}"
            item: dict[str, Any] = {
                "item_id": item_id,
                "title": f"{item_id} take {i}",
                "genres": rng.sample(GENRES, 2),
                "description": f"A film about {rng.choice(['trains', 'storms', 'chess', 'ghosts'])} ({i}).",
            }
            status = client.post(f"{base}/items", json=[item]).status_code
            statuses[status] = statuses.get(status, 0) + 1
            if i % every == 0:
                samples.append((i, server.memory_info().rss / 2**20))
    elapsed = time.perf_counter() - start
    print(f"b. server RSS over {posts} POST /items ({fixed} ids replaced, then new ids past the cap), {elapsed:.0f} s")
    print(f"   statuses: {dict(sorted(statuses.items()))}")
    print("   posts:   " + " ".join(f"{i:>7d}" for i, _ in samples))
    print("   RSS MiB: " + " ".join(f"{rss:7.1f}" for _, rss in samples))
    if len(samples) >= 2:
        first, last = samples[0][1], samples[-1][1]  # the first sample is after 1 x --sample-every posts of warm-up
        print(f"   last / first after warm-up: {last / first:.3f}   (target within 10%: 0.90-1.10)")
    lines = len(log_file.read_text().splitlines()) if log_file.exists() else 0
    print(f"   items log: {lines} lines for {fixed} live items (compacted past 2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", help="a workdir with a trained champion (default: train a tiny one in a temp dir)")
    parser.add_argument("--seconds", type=float, default=20, help="/health sampling time, without and with load")
    parser.add_argument("--posts", type=int, default=10_000, help="POST /items in phase b")
    parser.add_argument("--sample-every", type=int, default=1000, help="posts between RSS samples")
    parser.add_argument("--max-added-items", type=int, default=100, help="the server's cap: the fixed ids replaced")
    parser.add_argument(
        "--request-timeout", type=float, help="the server's request budget in s (default: ServeSettings'; 0: none)"
    )
    parser.add_argument("--skip", choices=["health", "rss"], help="leave one phase out")
    args = parser.parse_args()

    from recsys_tasks.limits import MAX_TEXT
    from recsys_tasks.serving.settings import ServeSettings

    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as scratch:
        workdir = Path(args.workdir).resolve() if args.workdir else Path(scratch) / "work"
        started = time.perf_counter()
        train(workdir)
        print(f"model: {workdir} (ready in {time.perf_counter() - started:.0f} s)")
        serve_dir, log = Path(scratch) / "serve", Path(scratch) / "server.log"
        process, base = start_server(workdir, serve_dir, args.max_added_items, log, args.request_timeout)
        try:
            print(f"server: recsys serve at {base}, pid {process.pid}; cores {os.cpu_count()}")
            print("load average (1, 5, 15 min) at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
            settings = ServeSettings()
            budget = settings.request_timeout_s if args.request_timeout is None else args.request_timeout
            print(
                f"request budget (request_timeout_s): {budget} s; a batch past it is answered 503"
                if budget
                else "request budget: none (a batch is waited for however long it takes)"
            )
            n = settings.max_batch_requests
            if args.skip != "health":
                phase_health(base, args.seconds, n, text_chars_that_fit(n, MAX_TEXT, settings.max_body_bytes))
            if args.skip != "rss":
                from recsys_tasks.config import PipelineConfig

                items_log = serve_dir / "serving" / PipelineConfig().registry.model_name / "items.jsonl"
                phase_rss(base, process.pid, args.posts, args.sample_every, args.max_added_items, items_log)
            print("load average (1, 5, 15 min) at end:   {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        finally:
            _stop(process)


if __name__ == "__main__":
    main()

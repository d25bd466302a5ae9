"""Load test of the HTTP API on loopback, side by side with a bare FastAPI endpoint.

Servers run in their own processes (one uvicorn worker each); the load generators run on the same
machine: on a 2-core machine they take CPU from the server they measure, for the bare endpoint and
the API alike. The closed loop is driven by wrk (Debian's ``wrk``: C, one thread, 50 connections,
the same request bodies cycled) where it is installed, else by asyncio + aiohttp in this process
(``--aiohttp``), which costs about as much CPU per request as the servers it drives, so that the
figures measure it as much as them; the open loops are asyncio + aiohttp. For phases 1 and 2 the
servers are pinned to one core and the load generator to the other(s) (`_pinned`; ``--no-pin``
leaves them be); the text phase uses every core (the API encodes on two threads). Every loop is
bounded in time and count, every server is stopped at the end.

    python bench/bench_serving.py [--workdir .recsys] [--train] [--seconds 10] [--items 1000000]

1. peak throughput, 50 concurrent clients (closed loop): bare top-20 matrix product vs /recommend;
2. open loop at 300 requests/s, requests without text: p50/p99 (latency from the scheduled send
   time, so queueing counts);
3. open loop at 50 requests/s, each with a sentence never seen before: p50/p99, the API as served
   (sentences through ONNX Runtime) and, alternating with it, an API on the int8 graph
   (``--text-runtime onnx-int8``) and one encoding with PyTorch;
4. POST /items, then /recommend with the new item as candidate: time until it is recommended;
5. a synthetic catalog of --items items (the champion's items, copied with noise, as new items
   without ID), open loop at 50 requests/s: exact matrix product vs the FAISS IVF index.

The model is the champion of --workdir's registry (``make run`` or ``recsys run`` leaves one;
--train runs ``recsys run`` first when there is none). Items the benchmark adds go to a
temporary serving workdir, not to --workdir.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GENRES = [
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
TOPICS = [
    "trains",
    "islands",
    "chess",
    "robots",
    "jazz",
    "dragons",
    "detectives",
    "submarines",
    "deserts",
    "twins",
    "heists",
    "ghosts",
    "kings",
    "pilots",
    "gardens",
    "storms",
    "circuses",
    "spies",
    "volcanoes",
    "wolves",
]


# ---------------------------------------------------------------- servers (child processes)
def _serve_bare(workdir: str, port: int) -> None:
    """The reference: parse the JSON body, one top-20 matrix product, a JSON answer. Nothing else."""
    import numpy as np
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from recsys_tasks.registry.store import load_recommender

    rec = load_recommender()
    vecs, bias = rec.item_vecs.float().numpy(), rec.item_bias.float().numpy()
    user = vecs.mean(0)
    ids = rec.item_ids
    app = FastAPI()

    @app.post("/bare")
    async def bare(body: dict) -> JSONResponse:
        scores = vecs @ user + bias
        top = np.argpartition(-scores, 20)[:20]
        top = top[np.argsort(-scores[top])]
        return JSONResponse(
            {
                "request_id": body.get("request_id"),
                "items": [{"item_id": ids[i], "score": round(float(scores[i]), 6)} for i in top],
            }
        )

    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


def _serve_synthetic(workdir: str, port: int, n_items: int, index: str) -> None:
    """The champion with its catalog grown to ``n_items`` by noisy copies of its items (no ID rows)."""
    import numpy as np
    import pandas as pd
    import torch
    import uvicorn

    from recsys_tasks.model.recommender import Bundle, Recommender
    from recsys_tasks.registry.store import load_recommender
    from recsys_tasks.serving.app import ModelHolder, ServeSettings, create_app

    rec = load_recommender()
    bundle = rec.bundle
    extra = n_items - len(rec.item_ids)
    rng = np.random.default_rng(0)
    source = rng.integers(0, len(rec.item_ids), extra)
    content = bundle.item_content[source] + rng.normal(0, 0.02, (extra, bundle.item_content.shape[1])).astype(
        np.float32
    )
    synthetic = pd.DataFrame({"item_id": [f"syn{i}" for i in range(extra)]})
    for column in bundle.catalog.columns:
        if column not in ("item_id", "id_row"):
            synthetic[column] = bundle.catalog[column].iloc[source].to_numpy()
    synthetic["id_row"] = int(bundle.meta["n_id_items"])
    big = Bundle(
        pd.concat([bundle.catalog, synthetic[bundle.catalog.columns]], ignore_index=True),
        np.vstack([bundle.item_content, content]).astype(np.float32),
        bundle.users,
        bundle.histories,
        bundle.texts,
        bundle.text_vectors,
        bundle.kg_demo,
        dict(bundle.meta),
        bundle.item_links,
        bundle.content_map,
        bundle.fusion,
        bundle.ease,
    )
    del content
    torch.set_num_threads(2)  # building: the item tower over every item
    big_rec = Recommender(big, rec.model)
    settings = ServeSettings(
        workdir=tempfile.mkdtemp(prefix="bench-serve-"), poll_seconds=0, index=index, index_min_items=0
    )
    app = create_app(holder=ModelHolder(settings, recommender=big_rec))
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


def _start(args: list[str], env: dict[str, str], url: str, seconds: float = 600) -> subprocess.Popen:
    import urllib.request

    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server {args} exited:\n{process.stderr.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return process
        except OSError:
            time.sleep(0.5)
    _stop(process)
    raise SystemExit(f"server {args} not up after {seconds} s")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- load generation
def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def _post(session, url: str, body: bytes) -> tuple[int, bytes]:
    async with session.post(url, data=body, headers={"content-type": "application/json"}) as response:
        return response.status, await response.read()


async def closed_loop(url: str, bodies: Callable[[int], bytes], clients: int, seconds: float) -> dict[str, float]:
    """Each client sends its next request when the last one is answered; requests/s over ``seconds``."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def client(stop_at: float, counts: list[int]) -> None:  # counts: [sent, done, errors]
            while time.perf_counter() < stop_at:
                counts[0] += 1
                status, _ = await _post(session, url, bodies(counts[0]))
                counts[1], counts[2] = counts[1] + 1, counts[2] + (status != 200)

        for length in (min(2.0, seconds), seconds):  # a warm-up, then the measured phase
            counts = [0, 0, 0]
            start = time.perf_counter()
            await asyncio.gather(*[client(start + length, counts) for _ in range(clients)])
            elapsed = time.perf_counter() - start
    done, errors = counts[1], counts[2]
    return {"rps": done / elapsed, "errors": errors, "requests": done}


@contextlib.contextmanager
def _pinned(servers: list[subprocess.Popen], enabled: bool = True):
    """The servers on the first core, this process (the load generator, and the wrk it starts) on the
    others, then every process on every core again: the generator's bursts and the server's do not
    preempt each other (measured, 300 req/s open loop: /recommend p99 23-25 ms pinned, 24-66 ms not;
    the bare endpoint's 13-22 ms vs 17-30 ms). Yields the generator's cores (None: not pinned)."""
    cores = sorted(os.sched_getaffinity(0))
    if not enabled or len(cores) < 2:
        yield None
        return
    every = set(cores)
    for server in servers:
        _set_affinity(server.pid, {cores[0]})
    _set_affinity(os.getpid(), set(cores[1:]))
    try:
        yield cores[1:]
    finally:
        for pid in [os.getpid(), *(server.pid for server in servers if server.poll() is None)]:
            _set_affinity(pid, every)


def _set_affinity(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` (threads started later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:  # the thread ended meanwhile
            pass


def wrk_closed_loop(
    url: str, bodies: Callable[[int], bytes], clients: int, seconds: float, folder: Path, cpus: list[int] | None = None
) -> dict[str, float]:
    """`closed_loop` driven by wrk: 2,000 bodies cycled through a Lua script; a warm-up run first."""
    body_file, script = folder / "bodies.jsonl", folder / "post.lua"
    if not body_file.exists():
        body_file.write_bytes(b"".join(bodies(i) + b"\n" for i in range(2000)))
    script.write_text(f"""local bodies = {{}}
for line in io.lines("{body_file}") do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
""")
    results = []
    for length in (min(2.0, seconds), seconds):
        pin = ["taskset", "-c", ",".join(map(str, cpus))] if cpus and shutil.which("taskset") else []
        out = subprocess.run(
            [*pin, "wrk", "-t1", f"-c{clients}", f"-d{max(1, round(length))}s", "-s", str(script), url],
            capture_output=True,
            text=True,
            timeout=length + 60,
            check=True,
        ).stdout
        lines = {line.split(":")[0].strip(): line for line in out.splitlines() if ":" in line}
        errors = sum(int(n) for n in lines.get("Non-2xx or 3xx responses", "x: 0").split(":")[1].split())
        done = int(next(line.split()[0] for line in out.splitlines() if "requests in" in line))
        results.append({"rps": float(lines["Requests/sec"].split(":")[1]), "errors": errors, "requests": done})
    return results[-1]


@contextlib.contextmanager
def _no_gc():
    """No cyclic collection in the load generator while it measures: a pause of its own would count
    as the server's latency (the objects made meanwhile are freed by reference counting)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def open_loop(url: str, bodies: Callable[[int], bytes], rate: float, seconds: float) -> dict[str, float]:
    """Requests sent on a fixed schedule whatever the answers; latency counted from the scheduled time."""
    import aiohttp

    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0

    async def one(session, at: float, body: bytes) -> None:
        nonlocal errors
        status, _ = await _post(session, url, body)
        latencies.append(loop.time() - at)
        errors += status != 200

    with _no_gc():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await _post(session, url, bodies(0))  # a connection and the first-request costs out of the way
            n = int(rate * seconds)
            start = loop.time() + 0.05
            tasks = []
            for i in range(n):
                at = start + i / rate
                delay = at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(session, at, bodies(i + 1))))
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 120)
    return {
        "p50_ms": 1e3 * _percentile(latencies, 50),
        "p99_ms": 1e3 * _percentile(latencies, 99),
        "max_ms": 1e3 * max(latencies),
        "errors": errors,
        "requests": n,
        "achieved_rps": n / (loop.time() - start),
    }


async def item_latency(base: str, trials: int) -> dict[str, float]:
    """Seconds from the start of POST /items until /recommend returns the new item."""
    import aiohttp

    times = []
    async with aiohttp.ClientSession() as session:
        for trial in range(trials):
            item_id = f"bench-{os.getpid()}-{trial}"
            item = [
                {
                    "item_id": item_id,
                    "title": f"Bench Movie {trial}",
                    "year": 2020,
                    "genres": "Drama|Sci-Fi",
                    "description": f"A benchmark film about {TOPICS[trial % len(TOPICS)]}.",
                }
            ]
            start = time.perf_counter()
            status, _ = await _post(session, f"{base}/items", json.dumps(item).encode())
            assert status == 200, status
            query = json.dumps({"request_id": "x", "candidates": [item_id], "k": 1}).encode()
            for _ in range(1000):
                status, body = await _post(session, f"{base}/recommend", query)
                if status == 200 and json.loads(body)["items"]:
                    break
            times.append(time.perf_counter() - start)
    return {"median_ms": 1e3 * _percentile(times, 50), "max_ms": 1e3 * max(times), "trials": trials}


# ---------------------------------------------------------------- requests
def _request_maker(users: list[str], items: list[str], text: bool, seed: int = 0) -> Callable[[int], bytes]:
    """Known users (their training history) and new users (a profile, 0-10 clicks), k=20; with a new
    sentence each when ``text``."""
    rng = random.Random(seed)

    def make(i: int) -> bytes:
        request: dict[str, Any] = {"request_id": f"r{i}", "k": 20}
        if text or i % 2:
            request["profile"] = {
                "age": rng.randint(15, 70),
                "gender": rng.choice("MF"),
                "occupation": rng.choice(["student", "engineer", "artist", "writer", "other"]),
            }
            request["history"] = [{"item_id": rng.choice(items), "rating": 5} for _ in range(rng.randint(0, 10))]
        else:
            request["user_id"] = rng.choice(users)
        if text:
            g1, g2 = rng.sample(GENRES, 2)
            request["text"] = f"I like {g1} and {g2} movies, especially about {rng.choice(TOPICS)} (#{i}-{seed})."
        return json.dumps(request).encode()

    return make


def _catalog(workdir: Path) -> tuple[list[str], list[str]]:
    import pandas as pd

    from recsys_tasks.registry.store import load_recommender

    rec = load_recommender()
    return sorted(pd.unique(rec.bundle.histories["user_id"]).tolist())[:500], rec.item_ids


def _median(values: list[float]) -> float:
    return _percentile(values, 50)


def _spread(results: list[dict[str, float]], key: str, unit: str) -> str:
    values = [r[key] for r in results]
    errors = sum(r["errors"] for r in results)
    return f"rounds: {', '.join(f'{v:.0f}' for v in values)} {unit}" + (f", {errors} errors" if key == "rps" else "")


# ---------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=os.environ.get("RECSYS_WORKDIR", str(ROOT / ".recsys")))
    parser.add_argument("--train", action="store_true", help="run `recsys run` first if the workdir has no champion")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured load phase")
    parser.add_argument("--items", type=int, default=1_000_000, help="synthetic catalog size (0: skip)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/API rounds of the no-text phases")
    parser.add_argument(
        "--aiohttp", action="store_true", help="drive the closed loop with aiohttp even where wrk is installed"
    )
    parser.add_argument("--no-pin", action="store_true", help="leave servers and load generator on every core")
    parser.add_argument("--serve", choices=["bare", "synthetic"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--index", default="exact", help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    os.environ["RECSYS_WORKDIR"] = str(workdir)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    if args.serve == "bare":
        return _serve_bare(str(workdir), args.port)
    if args.serve == "synthetic":
        return _serve_synthetic(str(workdir), args.port, args.items, args.index)

    from recsys_tasks.registry.store import alias_version

    if alias_version(os.environ.get("RECSYS_MODEL_NAME", "recsys-cold-start")) is None:
        if not args.train:
            raise SystemExit(
                f"no champion in {workdir}: run `make run`, `recsys run --workdir {workdir}`, or pass --train"
            )
        subprocess.run([sys.executable, "-m", "recsys_tasks.cli", "run", "--workdir", str(workdir)], check=True)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    users, items = _catalog(workdir)
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    serve_dir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    me = [sys.executable, str(Path(__file__).resolve())]
    rows: list[tuple[str, str, str]] = []
    servers: list[subprocess.Popen] = []
    try:
        bare_port, api_port = _free_port(), _free_port()
        servers.append(
            _start(
                me + ["--serve", "bare", "--port", str(bare_port), "--workdir", str(workdir)],
                env,
                f"http://127.0.0.1:{bare_port}/docs",
            )
        )
        servers.append(
            _start(
                [
                    sys.executable,
                    "-m",
                    "recsys_tasks.cli",
                    "serve",
                    "--workdir",
                    str(serve_dir),
                    "--port",
                    str(api_port),
                    "--poll-seconds",
                    "0",
                    "--no-access-log",
                ],
                env,
                f"http://127.0.0.1:{api_port}/health",
            )
        )
        bare, api = f"http://127.0.0.1:{bare_port}", f"http://127.0.0.1:{api_port}"
        no_text = _request_maker(users, items, text=False)
        s = args.seconds

        # Alternating rounds, so a neighbour's burst of CPU use hits both sides alike; medians reported.
        runs: dict[str, list[dict[str, float]]] = {"bare": [], "api": []}
        opens: dict[str, list[dict[str, float]]] = {"bare endpoint": [], "/recommend": []}
        driver = "wrk" if shutil.which("wrk") and not args.aiohttp else "aiohttp"
        with _pinned(servers, not args.no_pin) as generator_cores:
            for _ in range(args.rounds):
                for side, url in (("bare", f"{bare}/bare"), ("api", f"{api}/recommend")):
                    runs[side].append(
                        wrk_closed_loop(url, no_text, 50, s, serve_dir, generator_cores)
                        if driver == "wrk"
                        else asyncio.run(closed_loop(url, no_text, 50, s))
                    )
            for _ in range(args.rounds):
                for name, url in (("bare endpoint", f"{bare}/bare"), ("/recommend", f"{api}/recommend")):
                    opens[name].append(asyncio.run(open_loop(url, no_text, 300, s)))
        pinning = (
            f"servers on 1 core, the load generator on {len(generator_cores)}" if generator_cores else "not pinned"
        )
        b, a = (_median([r["rps"] for r in runs[k]]) for k in ("bare", "api"))
        rows += [
            (
                f"bare endpoint, 50 clients, closed loop ({driver})",
                f"{b:.0f} req/s",
                f"{_spread(runs['bare'], 'rps', 'req/s')}; {pinning}",
            ),
            (
                f"/recommend, 50 clients, closed loop ({driver})",
                f"{a:.0f} req/s",
                f"{_spread(runs['api'], 'rps', 'req/s')}; {100 * a / b:.0f}% of bare (target >= 70%)",
            ),
        ]
        for name, results in opens.items():
            p50, p99 = _median([r["p50_ms"] for r in results]), _median([r["p99_ms"] for r in results])
            rows.append(
                (
                    f"{name}, 300 req/s open loop, no text",
                    f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
                    f"p99 {_spread(results, 'p99_ms', 'ms')}, "
                    f"{sum(r['errors'] for r in results)} errors"
                    + (" (target p99 <= 25 ms)" if name == "/recommend" else ""),
                )
            )
        # New sentences: the API as configured (ONNX Runtime), the opt-in int8 graph and, as the baseline,
        # PyTorch; the same sentences for each in a round, other ones in every round.
        urls = {"onnx": api}
        for runtime in ("onnx-int8", "torch"):
            port = _free_port()
            servers.append(
                _start(
                    [
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
                        "--text-runtime",
                        runtime,
                    ],
                    env,
                    f"http://127.0.0.1:{port}/health",
                )
            )
            urls[runtime] = f"http://127.0.0.1:{port}"
        texts: dict[str, list[dict[str, float]]] = {runtime: [] for runtime in urls}
        for r in range(args.rounds):
            for runtime, url in urls.items():
                sentences = _request_maker(users, items, text=True, seed=100 * r + 1)
                texts[runtime].append(asyncio.run(open_loop(f"{url}/recommend", sentences, 50, s)))
        _stop(servers.pop())
        _stop(servers.pop())
        notes = {
            "onnx": " (target p99 <= 50 ms)",
            "onnx-int8": " (opt-in: --text-runtime onnx-int8)",
            "torch": " (baseline: PyTorch encoder)",
        }
        for runtime, results in texts.items():
            p50, p99 = _median([x["p50_ms"] for x in results]), _median([x["p99_ms"] for x in results])
            rows.append(
                (
                    f"/recommend, 50 new sentences/s, {runtime}",
                    f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
                    f"p99 {_spread(results, 'p99_ms', 'ms')}, {sum(x['errors'] for x in results)} "
                    "errors" + notes[runtime],
                )
            )
        i = asyncio.run(item_latency(api, 20))
        rows.append(
            (
                "POST /items -> recommendable",
                f"median {i['median_ms']:.0f} ms, max {i['max_ms']:.0f} ms",
                f"{i['trials']} items (target <= 1000 ms)",
            )
        )
        for server in servers:
            _stop(server)
        servers.clear()

        if args.items:
            for index in ("exact", "faiss"):
                port = _free_port()
                started = time.perf_counter()
                servers.append(
                    _start(
                        me
                        + [
                            "--serve",
                            "synthetic",
                            "--port",
                            str(port),
                            "--items",
                            str(args.items),
                            "--index",
                            index,
                            "--workdir",
                            str(workdir),
                        ],
                        env,
                        f"http://127.0.0.1:{port}/health",
                    )
                )
                ready = time.perf_counter() - started
                o = asyncio.run(open_loop(f"http://127.0.0.1:{port}/recommend", no_text, 50, s))
                rows.append(
                    (
                        f"{args.items:,} items, {index}, 50 req/s open loop",
                        f"p50 {o['p50_ms']:.1f} ms, p99 {o['p99_ms']:.1f} ms",
                        f"max {o['max_ms']:.0f} ms, {o['errors']} errors, ready in {ready:.0f} s "
                        "(target p99 <= 100 ms)",
                    )
                )
                _stop(servers.pop())
    finally:
        for server in servers:
            _stop(server)
        shutil.rmtree(serve_dir, ignore_errors=True)
    print(
        f"\nServing benchmark, {workdir} champion, top-20, loopback; {os.cpu_count()} cores shared by the "
        f"load generator and the server under test; {s:.0f} s per phase; load average before/after: "
        f"{load_before} / {' '.join(f'{x:.1f}' for x in os.getloadavg())}.\n"
    )
    width = max(len(r[0]) for r in rows)
    print(f"| {'measure'.ljust(width)} | figure | note |\n|{'-' * (width + 2)}|---|---|")
    for name, figure, note in rows:
        print(f"| {name.ljust(width)} | {figure} | {note} |")


if __name__ == "__main__":
    main()

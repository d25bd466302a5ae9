"""``recsys``: run the workflow in-process, or answer recommendation requests from a JSONL file.

    recsys run --data DIR|bundled [--workdir W] [--no-holdout] [--set key=value ...]
    recsys recommend [--workdir W] [--model MODEL_URI] --requests FILE.jsonl [--k 20]
    recsys serve [--workdir W] [--model MODEL_URI] [--host 127.0.0.1] [--port 8000]
    recsys batch-score [--workdir W] [--target URI] [--table T] [--k 20] [--shards N [--shard I]] [--users FILE]
    recsys compare-variants --exposures LOG --interactions FILE_OR_SQL [--k K] [--json]

Errors in the input are reported on stderr with exit code 2, naming the file, line and field; a
failing MLflow store in one line naming it, exit code 1. A failed ``run`` removes its run directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from recsys_tasks.config import ConfigError, PipelineConfig


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.workdir:
        os.environ["RECSYS_WORKDIR"] = str(Path(args.workdir).resolve())
    try:
        return args.func(args)
    except (ConfigError, ValueError, LookupError, FileNotFoundError) as exc:
        print(f"recsys {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    """A failed run leaves no ``runs/<id>/`` behind; a failing MLflow store is one line on stderr, exit 1."""
    import shutil

    from recsys_tasks.pipeline import NO_HOLDOUT, new_run_id, run_dir, run_pipeline
    from recsys_tasks.registry.store import StoreError

    cfg = PipelineConfig.from_yaml(args.config) if args.config else PipelineConfig()
    cfg = cfg.with_overrides({"extract.source": args.data})
    if args.no_holdout:
        cfg = cfg.with_overrides(NO_HOLDOUT)
    cfg = cfg.with_overrides(args.set or [])
    run_id = new_run_id()
    try:
        summary = run_pipeline(cfg, run_id=run_id)
    except BaseException as exc:  # Ctrl-C included: the run directory of a failed run is removed
        shutil.rmtree(run_dir(run_id), ignore_errors=True)
        if not isinstance(exc, StoreError):
            raise
        print(f"recsys run: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in summary.items() if k != "table"}, indent=2, default=str))
    if summary.get("table"):
        print(summary["table"], file=sys.stderr)
    return 0


def _store_failure(command: str, exc: Exception) -> int:
    """A store that cannot be read: one line naming it (`StoreError`'s message), exit code 1, no traceback."""
    print(f"recsys {command}: error: {exc}", file=sys.stderr)
    return 1


def _recommend(args: argparse.Namespace) -> int:
    from recsys_tasks.config import tracking_uri
    from recsys_tasks.model.requests import read_requests
    from recsys_tasks.registry.store import StoreError, load_recommender, store_errors

    requests = read_requests(args.requests)
    try:
        with store_errors(tracking_uri(), f"loading {args.model or 'the champion'}"):
            recommender = load_recommender(args.model, args.model_name)
    except StoreError as exc:
        return _store_failure("recommend", exc)
    for start in range(0, len(requests), 256):
        for response in recommender.recommend(requests[start : start + 256], k=args.k):
            print(json.dumps(response))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from recsys_tasks.registry.store import StoreError
    from recsys_tasks.serving.app import ServeSettings, create_app

    settings = ServeSettings.from_env(
        model_uri=args.model,
        model_name=args.model_name,
        host=args.host,
        poll_seconds=args.poll_seconds,
        default_k=args.k,
        text_runtime=args.text_runtime,
        request_timeout_s=args.request_timeout,
        max_added_items=args.max_added_items,
    )  # no API key beyond loopback: exits 2
    try:
        app = create_app(settings=settings)  # loads the model first: a bad URI exits with code 2
    except StoreError as exc:  # an unreachable, locked or broken store: exits 1
        return _store_failure("serve", exc)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        access_log=args.access_log,
        log_level="info" if args.verbose else "warning",
    )
    return 0


def _batch_score(args: argparse.Namespace) -> int:
    """One shard (``--shard``), or every shard in turn with the model loaded once and the table checked."""
    from recsys_tasks.config import tracking_uri, workdir
    from recsys_tasks.registry.store import StoreError
    from recsys_tasks.serving.batch import (
        BatchTarget,
        check_counts,
        load_version,
        read_users,
        resolve_champion,
        score_shard,
    )

    target = BatchTarget(
        args.target or os.environ.get("RECSYS_BATCH_URI") or f"sqlite:///{workdir() / 'batch.db'}", args.table
    )
    users = read_users(args.users) if args.users else None
    shards = [args.shard] if args.shard is not None else list(range(args.shards))
    try:
        version = args.version or resolve_champion(args.model_name, tracking_uri())
        recommender = load_version(args.model_name, version, tracking_uri())
    except StoreError as exc:
        return _store_failure("batch-score", exc)
    reports = []
    for shard in shards:
        reports.append(
            score_shard(target, shard, args.shards, args.k, args.model_name, version, users, recommender=recommender)
        )
        print(json.dumps(reports[-1]))
    if args.shard is None:
        print(json.dumps(check_counts(target, reports, users)))
    return 0


def _compare_variants(args: argparse.Namespace) -> int:
    """Champion against challenger on the interactions that followed their exposures (`report.variants`)."""
    from recsys_tasks.report.variants import compare_variants, format_comparison

    comparison = compare_variants(args.exposures, args.interactions, args.k)
    print(json.dumps(comparison.to_dict(), indent=2) if args.json else format_comparison(comparison))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run every stage in-process and register the model")
    run.add_argument("--data", default="bundled", help="'bundled', a RecBole atomic-file dir or a CSV dir")
    run.add_argument("--workdir", help="where runs and the embedded MLflow store live (RECSYS_WORKDIR)")
    run.add_argument("--config", help="a YAML file with PipelineConfig sections")
    run.add_argument(
        "--no-holdout",
        action="store_true",
        help="train on every interaction, skip evaluation, promote only if there is no champion",
    )
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. kg.epochs=5")
    run.set_defaults(func=_run)

    rec = sub.add_parser("recommend", help="one JSON line per request of a JSONL file")
    rec.add_argument("--workdir", help="the workdir whose registry holds the model (RECSYS_WORKDIR)")
    rec.add_argument("--model", help="an MLflow model URI (default: models:/<name>@champion)")
    rec.add_argument("--model-name", default=PipelineConfig().registry.model_name, help="registered model name")
    rec.add_argument("--requests", required=True, help="JSONL file, one request per line")
    rec.add_argument("--k", type=int, default=20, help="items per response unless a request says otherwise")
    rec.set_defaults(func=_recommend)

    serve = sub.add_parser("serve", help="the HTTP API (FastAPI under uvicorn); follows the champion alias")
    serve.add_argument("--workdir", help="the workdir whose registry holds the model (RECSYS_WORKDIR)")
    serve.add_argument("--model", help="an MLflow model URI (default: models:/<name>@champion, followed as it moves)")
    serve.add_argument("--model-name", default=PipelineConfig().registry.model_name, help="registered model name")
    serve.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (beyond loopback only with RECSYS_API_KEY set)"
    )
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--poll-seconds", type=float, default=10.0, help="how often the alias is checked (0: never)")
    serve.add_argument("--k", type=int, default=20, help="items per response unless a request says otherwise")
    serve.add_argument(
        "--text-runtime",
        choices=["onnx", "onnx-int8", "torch"],
        default="onnx",
        help="what encodes new sentences: ONNX Runtime (exported once, cached in "
        "<workdir>/serving/onnx), the same graph with int8 weights (~2.5x faster, "
        "vectors at cosine ~0.95 to the trained ones) or PyTorch",
    )
    serve.add_argument(
        "--request-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="time budget of a request: past it /recommend, /recommend/batch and /items answer 503 "
        "with Retry-After (default: ServeSettings.request_timeout_s; 0: none)",
    )
    serve.add_argument(
        "--max-added-items",
        type=int,
        default=None,
        metavar="N",
        help="distinct item ids POST /items may add; past it 409 (default: ServeSettings.max_added_items)",
    )
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log each request (uvicorn's access log)",
    )
    serve.set_defaults(func=_serve)

    batch = sub.add_parser("batch-score", help="the champion's top-k per user into a SQL table, by shard")
    batch.add_argument("--workdir", help="the workdir whose registry holds the model (RECSYS_WORKDIR)")
    batch.add_argument("--target", help="SQLAlchemy URI (default: RECSYS_BATCH_URI, else SQLite at <workdir>/batch.db)")
    batch.add_argument("--table", default="recsys_recommendations", help="table the rows go to, created where missing")
    batch.add_argument("--k", type=int, default=20, help="items per user")
    batch.add_argument("--shards", type=int, default=1, help="how many shards the users are split into")
    batch.add_argument("--shard", type=int, help="score only this shard (0-based); default: every shard, then check")
    batch.add_argument("--users", help="a file of user ids, one per line (default: every user the model knows)")
    batch.add_argument("--model-name", default=PipelineConfig().registry.model_name, help="registered model name")
    batch.add_argument("--version", help="the model version to score (default: the champion's now)")
    batch.set_defaults(func=_batch_score)

    variants = sub.add_parser(
        "compare-variants", help="champion against challenger: hit rate and mean rating after their exposures"
    )
    variants.add_argument(
        "--exposures",
        required=True,
        help="the API's exposure log (RECSYS_EXPOSURE_LOG); its rotated files are read too",
    )
    variants.add_argument(
        "--interactions",
        required=True,
        help="a CSV (user_id,item_id,rating,timestamp) or RecBole .inter file, or a SQL source (a SQLAlchemy URI, "
        "or 'sql' with RECSYS_SOURCE_URI) with an interactions table",
    )
    variants.add_argument("--k", type=int, help="count a hit among the first K items of a response (default: all)")
    variants.add_argument("--json", action="store_true", help="the figures as JSON instead of a table")
    variants.set_defaults(func=_compare_variants, workdir=None)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())

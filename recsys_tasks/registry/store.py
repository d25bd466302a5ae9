"""The registry's read side: load a registered model, read its aliases (what serving and the report need).

Registering and promoting (stage 6) live in `registry.register`; serving never imports them. A store
that cannot be read raises `StoreError` naming the store: a failed read is never taken for "no such
model or alias", so nothing downstream (the promotion gate above all) decides on one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from recsys_tasks.config import PipelineConfig, tracking_uri

CHAMPION, CHALLENGER = "champion", "challenger"


class ModelNotFoundError(LookupError):
    """A model URI that names nothing in the registry."""


class StoreError(RuntimeError):
    """The MLflow store could not be read or written (locked, unreachable, refused); the message names it."""


def store_label(uri: str) -> str:
    """The store's URI with any password replaced by ``***``: safe for error messages and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@contextmanager
def store_errors(uri: str, doing: str) -> Iterator[None]:
    """Turn whatever the MLflow client raises for a failing store into one line of `StoreError`."""
    import requests
    import sqlalchemy
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (StoreError, ModelNotFoundError):
        raise
    except (MlflowException, sqlalchemy.exc.SQLAlchemyError, requests.RequestException) as exc:
        lines = str(getattr(exc, "message", exc)).strip().splitlines() or [type(exc).__name__]
        raise StoreError(f"MLflow store {store_label(uri)}: {doing} failed: {lines[0]}") from exc


# MLflow's codes for a model, version or alias that does not exist (anything else: the store failed)
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def load_recommender(model_uri: str | None = None, model_name: str | None = None, uri: str | None = None):
    """The `Recommender` behind a model URI (default: ``models:/<name>@champion``) and its version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    model_uri = model_uri or f"models:/{model_name or PipelineConfig().registry.model_name}@{CHAMPION}"
    with store_errors(uri, f"loading {model_uri}"):  # a store that cannot be read is not a missing model
        try:
            model = mlflow.pyfunc.load_model(model_uri)
        except (MlflowException, OSError) as exc:
            if isinstance(exc, MlflowException) and exc.error_code not in _NOT_FOUND:
                raise
            raise ModelNotFoundError(f"cannot load model {model_uri!r}: {str(exc).splitlines()[0]}") from None
    recommender = model.unwrap_python_model().recommender
    recommender.meta["model_version"] = _version_of(model_uri, model)
    return recommender


def alias_version(model_name: str, alias: str = CHAMPION, uri: str | None = None) -> str | None:
    """The version an alias points at now (None: no such model or alias); what the API polls.
    A store that cannot be read raises `StoreError`."""
    from mlflow import MlflowClient

    uri = uri or tracking_uri()
    with store_errors(uri, f"reading {model_name}@{alias}"):
        version = version_by_alias(MlflowClient(tracking_uri=uri, registry_uri=uri), model_name, alias)
    return None if version is None else str(version.version)


def aliased_versions(
    model_name: str, aliases: Sequence[str] = (CHAMPION, CHALLENGER), uri: str | None = None
) -> dict[str, dict[str, Any]] | None:
    """Each alias's version with its run's metrics, params and tags (what the model report shows);
    an alias that is not set is left out, and None means no model of that name is registered."""
    from mlflow import MlflowClient

    uri = uri or tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    out: dict[str, dict[str, Any]] = {}
    with store_errors(uri, f"reading the aliases of {model_name}"):
        if _registered_model(client, model_name) is None:
            return None
        for alias in aliases:
            version = version_by_alias(client, model_name, alias)
            if version is None:
                continue
            run = client.get_run(version.run_id)
            out[alias] = {
                "version": str(version.version),
                "run_id": version.run_id,
                "run_name": run.info.run_name,
                "experiment_id": run.info.experiment_id,
                "created_ms": version.creation_timestamp,
                "version_tags": dict(version.tags),
                "run_tags": dict(run.data.tags),
                "params": dict(run.data.params),
                "metrics": dict(run.data.metrics),
            }
    return out


def _registered_model(client, name: str):
    """The registered model, or None when no model of that name exists; any other failure raises."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def version_by_alias(client, name: str, alias: str):
    """The model version behind ``name@alias``; None only when the model or the alias does not exist."""
    model = _registered_model(client, name)
    if model is None or alias not in (model.aliases or {}):
        return None
    return client.get_model_version(name, str(model.aliases[alias]))


def _version_of(model_uri: str, model) -> str:
    from mlflow import MlflowClient

    if model_uri.startswith("models:/") and "@" in model_uri:
        name, alias = model_uri[len("models:/") :].split("@", 1)
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    if model_uri.startswith("models:/"):
        return model_uri.rsplit("/", 1)[-1]
    return str(model.metadata.run_id or model_uri)

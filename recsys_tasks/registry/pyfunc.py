"""The MLflow pyfunc face of a bundle: requests in, recommendations out.

``mlflow.pyfunc.load_model(uri).predict(requests)`` takes a list of request dicts, one dict,
or a DataFrame with one request per row (what ``mlflow models serve`` hands over for
``dataframe_records``), and returns one response dict per request.
"""

from __future__ import annotations

import math
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd


class RecsysModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from recsys_tasks.model.recommender import Recommender

        self.recommender = Recommender.load(context.artifacts["bundle"])
        meta = self.recommender.meta
        meta["model_version"] = _registered_version(str(meta.get("model_version", "")))

    def predict(self, context, model_input, params=None):  # no hints: MLflow would turn them into a schema
        """One response dict per request (see `recsys_tasks.model.requests`)."""
        from recsys_tasks.model.requests import parse_requests

        requests = parse_requests(_records(model_input))
        k = int((params or {}).get("k", 20))
        return self.recommender.recommend(requests, k=k)


def _registered_version(made_by: str) -> str:
    """The registry's version of the model that run ``run:<id>`` registered, as the CLI and the API name it;
    ``made_by`` unchanged where the registry cannot say (a copy loaded away from its tracking store)."""
    if not made_by.startswith("run:"):
        return made_by
    from mlflow.tracking import MlflowClient

    run_id = made_by[len("run:") :]
    try:
        found = MlflowClient().search_model_versions(f"run_id = '{run_id}'")
    except Exception:  # noqa: BLE001 - no registry here: the run id still names the model
        return made_by
    ready = sorted({str(v.version) for v in found if v.status == "READY"}, key=int)
    return ready[0] if len(ready) == 1 else made_by


def _records(model_input: Any) -> list[dict[str, Any]]:
    """Plain request dicts from what MLflow hands over (a DataFrame, a dict, or a list of dicts
    whose values ``mlflow models serve`` wraps in numpy arrays for ``{"inputs": [...]}``)."""
    if isinstance(model_input, pd.DataFrame):
        records = model_input.to_dict("records")
    elif isinstance(model_input, dict):
        records = [model_input]
    else:
        records = list(model_input)
    return [{k: _plain(v) for k, v in dict(r).items() if not _missing(v)} for r in records]


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value = value.item() if value.ndim == 0 else value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))

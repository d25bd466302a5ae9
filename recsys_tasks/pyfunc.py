"""The MLflow pyfunc face of a bundle: requests in, recommendations out.

``mlflow.pyfunc.load_model(uri).predict(requests)`` takes a list of request dicts, one dict,
or a DataFrame with one request per row (what ``mlflow models serve`` hands over for
``dataframe_records``), and returns one response dict per request.
"""

from __future__ import annotations

import math
from typing import Any

import mlflow.pyfunc
import pandas as pd


class RecsysModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from .recommender import Recommender

        self.recommender = Recommender.load(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):  # no hints: MLflow would turn them into a schema
        """One response dict per request (see `recsys_tasks.requests`)."""
        from .requests import parse_requests

        requests = parse_requests(_records(model_input))
        k = int((params or {}).get("k", 20))
        return self.recommender.recommend(requests, k=k)


def _records(model_input: Any) -> list[dict[str, Any]]:
    if isinstance(model_input, pd.DataFrame):
        return [{k: v for k, v in row.items() if not _missing(v)} for row in model_input.to_dict("records")]
    if isinstance(model_input, dict):
        return [model_input]
    return list(model_input)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))

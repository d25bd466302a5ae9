"""What MLflow hands the pyfunc model becomes plain request dicts, whatever the input format."""

from __future__ import annotations

import json

import pandas as pd
from mlflow.pyfunc.scoring_server import infer_and_parse_data

from recsys_tasks.model.requests import parse_requests
from recsys_tasks.registry.pyfunc import _records

REQUESTS = [
    {"request_id": "a", "k": 3},
    {
        "request_id": "b",
        "profile": {"age": 30, "gender": "F"},
        "history": [{"item_id": "1", "rating": 5}],
        "candidates": ["1", "2"],
        "text": "I like Drama movies.",
    },
]


def test_inputs_format_of_mlflow_models_serve() -> None:
    """`{"inputs": [...]}`: MLflow wraps every value in a numpy array; the requests survive intact."""
    parsed = infer_and_parse_data(json.loads(json.dumps({"inputs": REQUESTS})))
    assert parse_requests(_records(parsed)) == parse_requests(REQUESTS)


def test_dataframe_records_format() -> None:
    """`{"dataframe_records": [...]}`: a DataFrame whose missing fields are NaN; they are dropped."""
    parsed = infer_and_parse_data(json.loads(json.dumps({"dataframe_records": REQUESTS})))
    assert isinstance(parsed, pd.DataFrame)
    assert parse_requests(_records(parsed)) == parse_requests(REQUESTS)


def test_a_single_dict_and_a_list() -> None:
    assert _records(REQUESTS[0]) == [REQUESTS[0]]
    assert _records(REQUESTS) == REQUESTS

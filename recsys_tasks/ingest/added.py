"""The read side of items ingested between retrains: a model version's added-items set, applied on load.

`ingest.new_items` records the set as one artefact (``new_items/items.jsonl``, the lines of
`serving.catalog.CatalogLog`: item record, text model, text vector) of an MLflow run, and names that
run in the model version's tag `ADDED_RUN_TAG`. The tag is set only after the artefact is complete,
so a reader sees the previous set or the new one, never half of one. Serving (`serving.holder`) and
batch scoring (`serving.batch`) call `apply_added_items` on every version they load; the run applied
is kept in ``recommender.meta[ADDED_RUN_META]`` so the holder can tell when the set has changed.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ADDED_RUN_META", "ADDED_RUN_TAG", "ARTIFACT", "added_items", "added_run", "apply_added_items"]

log = logging.getLogger(__name__)

ADDED_RUN_TAG = "recsys.new_items_run"  # model version tag: the run holding the version's added items
ADDED_RUN_META = "new_items_run"  # recommender.meta key: the run whose items were applied ("" none)
ARTIFACT = "new_items/items.jsonl"  # the set, as an artefact path of that run
_VERSION_URI = re.compile(r"^models:/(?P<name>[^@]+)/(?P<version>\d+)$")


def added_run(model_name: str, version: str, uri: str) -> str:
    """The run id that holds ``model_name`` version ``version``'s added items ("" when none)."""
    from mlflow import MlflowClient

    from recsys_tasks.registry.store import store_errors

    with store_errors(uri, f"reading the added items of {model_name} version {version}"):
        tags = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(model_name, str(version)).tags
    return str(tags.get(ADDED_RUN_TAG, ""))


def added_items(run_id: str, uri: str) -> list[dict[str, Any]]:
    """The entries of an added-items run ({"item", "text_model", "vector"}), in their order."""
    import mlflow

    from recsys_tasks.registry.store import store_errors
    from recsys_tasks.serving.catalog import CatalogLog

    with tempfile.TemporaryDirectory() as tmp:
        with store_errors(uri, f"downloading {ARTIFACT} of run {run_id}"):
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=ARTIFACT, dst_path=tmp, tracking_uri=uri
            )
        entries, _ = CatalogLog(Path(path)).read()
    return entries


def apply_added_items(recommender: Any, model_uri: str, uri: str) -> int:
    """Add a loaded version's added items to ``recommender`` through `Recommender.upsert_items` (the
    path of POST /items); a URI that names no registered version (``runs:/``) has none. Returns how many."""
    match = _VERSION_URI.match(model_uri)
    recommender.meta[ADDED_RUN_META] = ""
    if match is None:
        return 0
    run_id = added_run(match["name"], match["version"], uri)
    if not run_id:
        return 0
    entries = added_items(run_id, uri)
    text_model, dim = recommender.meta["text_model"], int(recommender.meta["text_dim"])
    wrong = [e["item"]["item_id"] for e in entries if e["text_model"] != text_model or len(e["vector"]) != dim]
    if wrong:  # made for this version, so never expected: refuse rather than score noise
        raise ValueError(
            f"added items run {run_id} of {model_uri}: items {wrong[:5]} were not encoded by the version's "
            f"text model {text_model!r} ({dim} dims); run the new-items ingestion again"
        )
    if entries:
        vectors = np.stack([e["vector"] for e in entries]).astype(np.float32)
        recommender.upsert_items([e["item"] for e in entries], vectors)
    recommender.meta[ADDED_RUN_META] = run_id
    log.info("%s: %d items added since its training (run %s)", model_uri, len(entries), run_id)
    return len(entries)

"""Items added to the source since the champion's snapshot, made recommendable without retraining.

`ingest_new_items` reads the source's items (files or SQL, `data.sources`), validates them as
extract does (file or table, column and row named), and compares them with the catalog the champion
was trained on. Every source item that catalog lacks is passed through POST /items' own schema
(`serving.schemas.ItemIn`), its text (`text.texts.item_text`) encoded by the version's text model,
and the whole set checked by `Recommender.upsert_items` on a loaded copy of the version (the path
POST /items takes: text ⊕ the KG row of the trained item linked to its entity, else zeros). The
set is then recorded on the version (`ingest.added`: an artefact of a new MLflow run, then a model
version tag naming that run), where serving and batch scoring apply it whenever they load it.

Idempotent: items whose record is unchanged keep their vector; with nothing added, changed or gone
from the source, nothing is written. Atomic: the artefact is complete before the tag names it; a
failure leaves the previous set. Bounded: more than ``max_items`` items to encode in one run is
refused naming the count (a bulk load is what retraining is for).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_tasks.config import PipelineConfig, tracking_uri
from recsys_tasks.data.tables import DataValidationError, RawTable
from recsys_tasks.ingest.added import ADDED_RUN_TAG, ARTIFACT, added_items, added_run

__all__ = ["MAX_ITEMS", "TooManyNewItemsError", "ingest_new_items", "read_items"]

log = logging.getLogger(__name__)

MAX_ITEMS = 10_000  # items encoded per run at most (serving's max_added_items default: the same order)
KIND_TAG = "recsys.kind"  # run tag: "new_items" marks the runs that hold added-item sets


class TooManyNewItemsError(ValueError):
    """More new or changed items than one run may encode (``max_items``)."""


def ingest_new_items(
    cfg: PipelineConfig,
    *,
    source: str | None = None,
    model_name: str | None = None,
    tracking: str | None = None,
    max_items: int = MAX_ITEMS,
    device: str = "cpu",
) -> dict[str, Any]:
    """Record the source's items that the champion's catalog lacks on the champion's version.

    ``source``: default ``cfg.extract.source`` (a SQLAlchemy URI, not ``sql:<conn id>``: the DAG
    resolves those); ``model_name``: default ``cfg.registry.model_name``; ``tracking``: the MLflow
    store (default `config.tracking_uri`). Returns a report: version, run, the ids added, updated
    and dropped, the set's size and where each item's KG part came from.
    Raises `DataValidationError` (file or table, column, row) or `TooManyNewItemsError` with nothing written.
    """
    from mlflow import MlflowClient

    from recsys_tasks.data.sql import display_uri, is_sql_source
    from recsys_tasks.registry.store import CHAMPION, ModelNotFoundError, alias_version, load_recommender

    if max_items < 1:
        raise ValueError(f"max_items must be 1 or more, got {max_items}")
    source = source or cfg.extract.source
    name = model_name or cfg.registry.model_name
    uri = tracking or tracking_uri()
    items, table = read_items(source)  # bad data fails before the model is even loaded
    version = alias_version(name, CHAMPION, uri)
    if version is None:
        raise ModelNotFoundError(f"no {CHAMPION} alias on registered model {name!r} in the MLflow store")
    model_uri = f"models:/{name}/{version}"
    recommender = load_recommender(model_uri, uri=uri)  # the trained catalog only: no added set applied
    wanted = _new_records(items, table, set(recommender.item_ids))
    current_run = added_run(name, version, uri)
    current = {str(e["item"]["item_id"]): e for e in (added_items(current_run, uri) if current_run else [])}
    fresh = [i for i in wanted if i not in current or current[i]["item"] != wanted[i]]
    dropped = sorted(set(current) - set(wanted))
    report: dict[str, Any] = {
        "model_name": name,
        "model_version": version,
        "source": display_uri(source) if is_sql_source(source) else source,
        "added": [i for i in fresh if i not in current],
        "updated": [i for i in fresh if i in current],
        "dropped": dropped,
        "n_items": len(wanted),
    }
    if not fresh and not dropped:
        log.info("new items: %s version %s already holds the source's %d new items", name, version, len(wanted))
        return report | {"run_id": current_run, "changed": False, "kg": {}}
    if len(fresh) > max_items:
        raise TooManyNewItemsError(
            f"{len(fresh):,} new or changed items in {report['source']} for {name} version {version}, over "
            f"max_items={max_items:,}: retrain on a new snapshot, or raise max_items"
        )
    text_model, text_dim = str(recommender.meta["text_model"]), int(recommender.meta["text_dim"])
    from recsys_tasks.model.bundle import encoder_path

    path = encoder_path(recommender.meta)  # text_model: the identity the entries are checked against
    vectors = dict(zip(fresh, _encode(path, [wanted[i] for i in fresh], device, text_dim)))
    for item_id in wanted:
        if item_id not in vectors:
            vectors[item_id] = current[item_id]["vector"]
    ids = list(wanted)
    matrix = np.stack([vectors[i] for i in ids]).astype(np.float32) if ids else np.zeros((0, text_dim), np.float32)
    statuses = recommender.upsert_items([wanted[i] for i in ids], matrix)  # the serving path, on this copy
    kg = pd.Series([s["kg"] for s in statuses], dtype=str).value_counts().to_dict()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run_id = _record(client, name, version, [wanted[i] for i in ids], text_model, matrix, report | {"kg": kg})
    log.info(
        "new items: %s version %s: %d added, %d updated, %d dropped, %d in all (run %s)",
        name,
        version,
        len(report["added"]),
        len(report["updated"]),
        len(dropped),
        len(ids),
        run_id,
    )
    return report | {"run_id": run_id, "changed": True, "kg": kg}


def read_items(source: str) -> tuple[pd.DataFrame, RawTable]:
    """The source's items, typed and validated as extract validates them (entity ids from its links), and
    the raw table (to name a row)."""
    from recsys_tasks.data.sources import load_source
    from recsys_tasks.data.validate import LIMITS, _items, _within_limits

    with load_source(source) as raw:  # a SQL source's interactions cursor is closed unread
        table = raw["items"]
        for name in ("items", "links"):
            if raw.get(name) is not None:
                _within_limits(raw[name], LIMITS[name])
        return _items(table, raw.get("links"), {}), table


def _new_records(items: pd.DataFrame, table: RawTable, trained: set[str]) -> dict[str, dict[str, Any]]:
    """``{item_id: catalog record}`` of the items ``trained`` lacks, each validated by POST /items' schema."""
    from pydantic import ValidationError

    from recsys_tasks.serving.schemas import ItemIn

    out: dict[str, dict[str, Any]] = {}
    for row, item in zip(items.index, items.itertuples(index=False)):
        if item.item_id in trained:
            continue
        payload = {
            "item_id": item.item_id,
            "title": item.title or None,
            "year": None if pd.isna(item.year) else int(item.year),
            "genres": item.genres.split("|") if item.genres else None,
            "description": item.description or None,
            "entity_id": item.entity_id or None,
        }
        try:
            out[item.item_id] = ItemIn.model_validate(payload).to_record()
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else "item_id"
            raise DataValidationError(
                f"{table.where(int(row), field)}: value {payload.get(field)!r} is refused for a new item: "
                f"{error['msg']}"
            ) from None
    return out


def _encode(text_model: str, records: list[dict[str, Any]], device: str, text_dim: int) -> np.ndarray:
    """The records' `item_text` encoded by the version's text model (what its catalog was encoded by)."""
    from recsys_tasks.text.encoder import TextEncoder
    from recsys_tasks.text.texts import item_text

    encoder = TextEncoder(text_model, device=device)
    if encoder.dim != text_dim:
        raise ValueError(f"text model {text_model!r} gives {encoder.dim} dims; the model version expects {text_dim}")
    return np.asarray(encoder.encode([item_text(r) for r in records]), np.float32)


def _record(
    client: Any,
    name: str,
    version: str,
    records: list[dict[str, Any]],
    text_model: str,
    vectors: np.ndarray,
    report: dict[str, Any],
) -> str:
    """Log the set as a new run's artefact, then point the version's tag at that run (the switch)."""
    from recsys_tasks.serving.catalog import CatalogLog

    model_version = client.get_model_version(name, version)
    experiment = client.get_run(model_version.run_id).info.experiment_id
    run = client.create_run(
        experiment,
        run_name=f"new-items-v{version}",
        tags={KIND_TAG: "new_items", "recsys.model_name": name, "recsys.model_version": str(version)},
    )
    run_id = run.info.run_id
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(ARTIFACT).name
            path.touch()  # an empty set (every added item gone from the source) is a file too
            CatalogLog(path).append(records, text_model, vectors)
            client.log_artifact(run_id, str(path), str(Path(ARTIFACT).parent))
        client.log_param(run_id, "source", report["source"])
        for key in ("added", "updated", "dropped"):
            client.log_metric(run_id, f"n_{key}", float(len(report[key])))
        client.log_metric(run_id, "n_items", float(len(records)))
        for source, count in report["kg"].items():
            client.log_metric(run_id, f"n_kg_{source}", float(count))
    except BaseException:
        client.set_terminated(run_id, "FAILED")  # never named by the tag: readers keep the previous set
        raise
    client.set_terminated(run_id, "FINISHED")
    client.set_model_version_tag(name, str(version), ADDED_RUN_TAG, run_id)
    return run_id

"""The Asset the new-items DAG emits when it changed a champion's added items (Airflow imported lazily)."""

from __future__ import annotations

from typing import Any

NEW_ITEMS_ASSET_NAME = "recsys_new_items"
NEW_ITEMS_ASSET_URI = "recsys://registry/champion/new-items"


def new_items_asset() -> Any:
    """Marks a change of the champion version's added items (`ingest.added`): batch scoring can run on it."""
    from airflow.sdk import Asset

    return Asset(name=NEW_ITEMS_ASSET_NAME, uri=NEW_ITEMS_ASSET_URI)

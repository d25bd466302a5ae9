"""What the DAGs share: the champion and new-items Assets' identities and Airflow connection lookup.

Airflow is imported inside the functions, so the package itself never needs it.
"""

from __future__ import annotations

from typing import Any

# Emitted by the cold-start DAG when a new champion is promoted; the batch-scoring DAG can run on it.
CHAMPION_ASSET_NAME = "recsys_champion"
CHAMPION_ASSET_URI = "recsys://registry/champion"
# Emitted by the new-items DAG when it changed the champion version's added items (`ingest.added`).
NEW_ITEMS_ASSET_NAME = "recsys_new_items"
NEW_ITEMS_ASSET_URI = "recsys://registry/champion/new-items"


def champion_asset() -> Any:
    """The Asset that marks a change of the registered model's champion."""
    from airflow.sdk import Asset

    return Asset(name=CHAMPION_ASSET_NAME, uri=CHAMPION_ASSET_URI)


def new_items_asset() -> Any:
    """The Asset that marks a change of the champion version's added items: batch scoring can run on it."""
    from airflow.sdk import Asset

    return Asset(name=NEW_ITEMS_ASSET_NAME, uri=NEW_ITEMS_ASSET_URI)


def connection_uri(conn_id: str) -> str:
    """An Airflow connection's SQLAlchemy URI (its provider hook's, else the connection's own), resolved
    inside the task that uses it so credentials never reach XCom, the logs or the resolved config."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    try:
        return conn.get_hook().sqlalchemy_url.render_as_string(hide_password=False)
    except Exception:  # no provider hook with a SQLAlchemy URL for this type: the connection's own URI
        return conn.get_uri().replace("postgres://", "postgresql://", 1)

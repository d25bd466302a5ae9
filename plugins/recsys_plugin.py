"""Airflow glue for the model report: a FastAPI app mounted in the API server under ``/recsys`` and
the UI entries that point at it and at MLflow. The report itself is `recsys_tasks.report.model_report`.

- ``/recsys/models/<name>``: the champion and challenger of a registered model (HTML), for anyone
  the auth manager lets read the DAG ``recsys_cold_start``; without a session, the login page.
- the DAG tab **Model report** (``/recsys/dags/<dag id>``), the side-bar page **Model report** and
  the side-bar link **MLflow model** (``RECSYS_MLFLOW_UI_URL``, default http://127.0.0.1:5000).
"""

from __future__ import annotations

import logging
from html import escape
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from recsys_tasks.config import RegistryConfig
from recsys_tasks.report.model_report import load_report, mlflow_ui_url, render_html

log = logging.getLogger(__name__)
DAG_ID = "recsys_cold_start"
URL_PREFIX = "/recsys"
MODEL_NAME = RegistryConfig().model_name


async def _may_read_the_dag(request: Request) -> None:
    """Airflow's own check (a JWT in the Authorization header or the UI's session cookie); a browser
    without a session is sent to the login page and back."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
    from fastapi.security import HTTPBearer

    try:
        user = await get_user(request, None, await HTTPBearer(auto_error=False)(request))
    except HTTPException as exc:
        if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
            login = get_auth_manager().get_url_login(next_url=str(request.url))
            raise HTTPException(307, headers={"Location": login}) from None
        raise
    requires_access_dag("GET", param_dag_id=DAG_ID)(request, user)


app = FastAPI(title="recsys model report", dependencies=[Depends(_may_read_the_dag)])


@app.get("/", include_in_schema=False)
def index() -> RedirectResponse:
    return RedirectResponse(f"{URL_PREFIX}/models/{quote(MODEL_NAME, safe='')}")


@app.get("/models/{name}", response_class=HTMLResponse)
def model_page(name: str) -> HTMLResponse:
    """The report; a registry that cannot be read is a page saying why (503), never a bare 500."""
    try:
        return HTMLResponse(render_html(load_report(name), mlflow_ui_url()))
    except Exception as exc:  # noqa: BLE001 - whatever MLflow raised, the page says it
        log.exception("model report for %s", name)
        return HTMLResponse(
            f"<!doctype html><title>MLflow unavailable</title><h1>{escape(name)}</h1><p>The "
            f"MLflow registry could not be read: {escape(type(exc).__name__)}: "
            f"{escape(str(exc).splitlines()[0] if str(exc) else '')}</p>",
            status_code=503,
        )


@app.get("/dags/{dag_id}", response_class=HTMLResponse)
def dag_page(dag_id: str) -> HTMLResponse:
    """The DAG tab: the report of the model this DAG registers (only ``recsys_cold_start`` registers one)."""
    if dag_id != DAG_ID:
        return HTMLResponse(
            f"<!doctype html><title>No model report</title><p>The DAG <code>{escape(dag_id)}</code> "
            f"registers no model; the model report is on <code>{DAG_ID}</code>.</p>"
        )
    return model_page(MODEL_NAME)


class RecsysPlugin(AirflowPlugin):
    name = "recsys"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "recsys model report"}]
    external_views = [
        {
            "name": "Model report",
            "href": f"{URL_PREFIX}/dags/{{DAG_ID}}",
            "destination": "dag",
            "url_route": "recsys-model-report",
        },
        {
            "name": "Model report",
            "href": f"{URL_PREFIX}/models/{quote(MODEL_NAME, safe='')}",
            "destination": "nav",
            "url_route": "recsys-models",
            "nav_top_level": True,
        },
        {
            "name": "MLflow model",
            "href": f"{mlflow_ui_url()}/#/models/{quote(MODEL_NAME, safe='')}",
            "destination": "nav",
            "category": "browse",
        },
    ]

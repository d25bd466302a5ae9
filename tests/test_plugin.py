"""The Airflow plugin: Airflow loads it from plugins/ (``airflow plugins``), and its FastAPI app answers
the report, the DAG tab and the two failure cases (nothing registered yet, a registry that cannot
be read) with a page, never a 500. Airflow's own authorization is bypassed here only through FastAPI's
``dependency_overrides``; tests/test_browser.py logs in for real and checks the 401 and the redirect."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "recsys_plugin.py"


def test_airflow_loads_the_plugin_with_its_app_and_views(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")},
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW_CONFIG": str(ROOT / "airflow.cfg"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "RECSYS_MLFLOW_UI_URL": "http://mlflow.test:5001",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
    }
    done = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "plugins", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [plugin] = [p for p in json.loads(done.stdout) if p["name"] == "recsys"]
    assert plugin["fastapi_apps"] == [
        {"app": "fastapi.applications.FastAPI", "url_prefix": "/recsys", "name": "recsys model report"}
    ]
    views = {(v["destination"], v.get("url_route")): v["href"] for v in plugin["external_views"]}
    assert views == {
        ("dag", "recsys-model-report"): "/recsys/dags/{DAG_ID}",
        ("nav", "recsys-models"): "/recsys/models/recsys-cold-start",
        ("nav", None): "http://mlflow.test:5001/#/models/recsys-cold-start",
    }


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The plugin's app on an empty workdir (its own SQLite store), every caller allowed."""
    monkeypatch.setenv("RECSYS_WORKDIR", str(tmp_path / "work"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = importlib.util.spec_from_file_location("recsys_plugin_under_test", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.app.dependency_overrides[module._may_read_the_dag] = lambda: None
    with TestClient(module.app) as test_client:
        yield test_client


def test_nothing_registered_yet_is_a_page_that_says_so(client: TestClient) -> None:
    page = client.get("/models/recsys-cold-start")
    assert page.status_code == 200 and "No model registered yet" in page.text
    tab = client.get("/dags/recsys_cold_start")
    assert tab.status_code == 200 and "No model registered yet" in tab.text
    index = client.get("/", follow_redirects=False)
    assert index.status_code == 307 and index.headers["location"] == "/recsys/models/recsys-cold-start"


def test_another_dags_tab_says_it_registers_no_model(client: TestClient) -> None:
    page = client.get("/dags/some_other_dag")
    assert page.status_code == 200 and "registers no model" in page.text and "some_other_dag" in page.text


def test_a_registry_that_cannot_be_read_is_a_503_page(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'a_file' / 'mlflow.db'}")  # under a file
    page = client.get("/models/recsys-cold-start")
    assert page.status_code == 503 and "could not be read" in page.text


def test_without_a_session_the_report_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_WORKDIR", str(tmp_path / "work"))
    spec = importlib.util.spec_from_file_location("recsys_plugin_no_override", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with TestClient(module.app) as test_client:
        assert test_client.get("/models/recsys-cold-start").status_code == 401
        assert test_client.get("/dags/recsys_cold_start").status_code == 401

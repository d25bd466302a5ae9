"""New items between retrains (`ingest.new_items`, `ingest.added`, ``dags/recsys_new_items.py``) on the
session's tiny bundle registered as champion in a real SQLite MLflow store: two items appended to a copy
of the tiny RecBole source are ingested, then a `ModelHolder` (the serving path) and batch scoring's
loader rank them without retraining; a rerun adds nothing; a bad row is named and nothing is written;
more than ``max_items`` is refused; a holder already serving picks the set up on its next poll.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from recsys_tasks.config import PipelineConfig
from recsys_tasks.data.tables import DataValidationError
from recsys_tasks.ingest.added import ADDED_RUN_META, ADDED_RUN_TAG
from recsys_tasks.ingest.new_items import TooManyNewItemsError, ingest_new_items

pytestmark = pytest.mark.slow  # the tiny training run, a real registry, model loads (~1 min in all)

NAME = "new-items-model"
DAG_FILE = Path(__file__).resolve().parents[1] / "dags" / "recsys_new_items.py"
# RecBole item rows (item_id, movie_title, release_year, class): n1 linked to trained item 1's entity.
NEW_ROWS = [["n1", "Space Wars", "1999", "Sci-Fi Action"], ["n2", "Two Sisters", "2001", "Drama"]]


@pytest.fixture(scope="module")
def registry(tiny_bundle: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from test_batch_scoring import register_champion

    return register_champion(tiny_bundle, tmp_path_factory.mktemp("new-items-registry"), NAME)


@pytest.fixture
def client(registry: Any) -> MlflowClient:
    """The store, the version's added items forgotten (each test starts from the trained catalog)."""
    client = MlflowClient(tracking_uri=registry.uri, registry_uri=registry.uri)
    if ADDED_RUN_TAG in client.get_model_version(NAME, registry.version).tags:
        client.delete_model_version_tag(NAME, registry.version, ADDED_RUN_TAG)
    return client


@pytest.fixture
def source(tiny_data: Path, tmp_path: Path, write_variant: Any) -> Path:
    """A copy of the tiny source with two new items (one linked to a trained item's KG entity)."""
    folder = Path(shutil.copytree(tiny_data, tmp_path / "source"))
    write_variant(folder / "tiny.item", append=NEW_ROWS)
    write_variant(folder / "tiny.link", append=[["n1", "m.film1"]])
    return folder


def _ingest(registry: Any, source: Path, **kwargs: Any) -> dict[str, Any]:
    return ingest_new_items(PipelineConfig(), source=str(source), model_name=NAME, tracking=registry.uri, **kwargs)


def _new_item_runs(client: MlflowClient) -> list[Any]:
    return client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`recsys.kind` = 'new_items'"
    )


def _holder(registry: Any, tmp_path: Path) -> Any:
    from recsys_tasks.serving.holder import ModelHolder
    from recsys_tasks.serving.settings import ServeSettings

    settings = ServeSettings(
        model_name=NAME,
        workdir=str(tmp_path / "serve"),
        tracking_uri=registry.uri,
        poll_seconds=0,
        torch_threads=0,
        text_runtime="torch",
    )
    return ModelHolder(settings)


def test_new_items_are_served_by_the_champion_without_retraining(
    registry: Any, client: MlflowClient, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recsys_tasks.explain import reasons
    from recsys_tasks.serving.batch import load_version
    from recsys_tasks.text.encoder import TextEncoder
    from recsys_tasks.text.texts import item_text

    report = _ingest(registry, source)
    assert (report["model_version"], report["added"], report["updated"], report["dropped"]) == (
        registry.version,
        ["n1", "n2"],
        [],
        [],
    )
    assert report["changed"] and report["kg"] == {"entity": 1, "none": 1}
    assert client.get_model_version(NAME, registry.version).tags[ADDED_RUN_TAG] == report["run_id"]

    # The tiny model's vectors are noise: reasons that need their agreement are let through (as in test_serving).
    monkeypatch.setattr(reasons, "SIMILAR_MIN", -1.0)
    monkeypatch.setattr(reasons, "RELATED_MIN", -1.0)
    holder = _holder(registry, tmp_path)
    try:
        rec = holder.served.recommender
        assert len(rec.item_ids) == 17 and rec.meta[ADDED_RUN_META] == report["run_id"]
        everything = holder.recommend([{"request_id": "all", "k": 17}])[0]
        reason = {i["item_id"]: i["reason"] for i in everything["items"]}
        assert {"n1", "n2"} <= set(reason) and reason["n2"] == "new in the catalog"
        (asked,) = holder.recommend([{"request_id": "t", "text": "Mostly sci-fi, please.", "candidates": ["n1", "n2"]}])
        asked_reason = {i["item_id"]: i["reason"] for i in asked["items"]}
        assert asked_reason["n1"] == "matches 'sci-fi'" and asked_reason["n2"] != "matches 'sci-fi'"
        # Embedded as POST /items embeds: the version's text model, and n1's KG part from trained item 1.
        text_dim = int(rec.meta["text_dim"])
        rows = [rec.item_row["n1"], rec.item_row["n2"]]
        records = [rec.bundle.catalog.iloc[r].to_dict() for r in rows]
        assert records[0]["title"] == "Space Wars" and records[0]["genres"] == "Sci-Fi|Action"
        expected = TextEncoder(rec.meta["text_model"], device="cpu").encode([item_text(r) for r in records])
        content = rec.bundle.item_content
        np.testing.assert_allclose(content[rows, :text_dim], expected, atol=1e-5)
        np.testing.assert_array_equal(content[rows[0], text_dim:], content[rec.item_row["1"], text_dim:])
        assert not content[rows[1], text_dim:].any()
    finally:
        holder.stop()
    batch = load_version(NAME, registry.version, registry.uri)  # batch scoring's loader applies them too
    assert {"n1", "n2"} <= set(batch.item_ids) and len(batch.item_ids) == 17


def test_a_rerun_adds_nothing_and_a_changed_item_is_replaced(
    registry: Any, client: MlflowClient, source: Path, write_variant: Any
) -> None:
    runs_before = len(_new_item_runs(client))
    first = _ingest(registry, source)
    again = _ingest(registry, source)
    assert not again["changed"] and again["run_id"] == first["run_id"]
    assert (again["added"], again["updated"], again["dropped"]) == ([], [], [])
    assert len(_new_item_runs(client)) == runs_before + 1  # the rerun logged no run
    assert client.get_model_version(NAME, registry.version).tags[ADDED_RUN_TAG] == first["run_id"]
    write_variant(source / "tiny.item", cells={(16, "movie_title"): "Two Sisters Again"})  # n2 renamed
    changed = _ingest(registry, source)
    assert changed["changed"] and (changed["added"], changed["updated"]) == ([], ["n2"])
    assert changed["n_items"] == 2 and changed["run_id"] != first["run_id"]
    write_variant(source / "tiny.item", drop_rows=[15])  # n1 gone from the source: gone from the set
    gone = _ingest(registry, source)
    assert gone["dropped"] == ["n1"] and gone["n_items"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {(16, "release_year"): "3000"},
            r"tiny\.item, column 'year', row 17 \(line 18\): value 3000 .*less than or equal to 2200",
        ),
        ({(16, "item_id"): "n1"}, r"tiny\.item, column 'item_id', row 17 \(line 18\): value 'n1' is a duplicate id"),
    ],
)
def test_a_bad_item_row_is_named_and_nothing_is_written(
    registry: Any, client: MlflowClient, source: Path, write_variant: Any, change: dict, message: str
) -> None:
    runs_before = len(_new_item_runs(client))
    write_variant(source / "tiny.item", cells=change)
    with pytest.raises(DataValidationError, match=message):
        _ingest(registry, source)
    assert ADDED_RUN_TAG not in client.get_model_version(NAME, registry.version).tags
    assert len(_new_item_runs(client)) == runs_before


def test_more_new_items_than_max_items_is_refused(registry: Any, client: MlflowClient, source: Path) -> None:
    runs_before = len(_new_item_runs(client))
    with pytest.raises(TooManyNewItemsError, match="2 new or changed items .* over max_items=1"):
        _ingest(registry, source, max_items=1)
    assert ADDED_RUN_TAG not in client.get_model_version(NAME, registry.version).tags
    assert len(_new_item_runs(client)) == runs_before


def test_a_serving_holder_picks_the_new_items_up_on_its_next_poll(
    registry: Any, client: MlflowClient, source: Path, tmp_path: Path
) -> None:
    holder = _holder(registry, tmp_path)
    try:
        assert len(holder.served.recommender.item_ids) == 15
        assert holder.poll_once() is False  # same version, same (no) added items: nothing reloaded
        _ingest(registry, source)
        assert holder.poll_once() is True
        assert {"n1", "n2"} <= set(holder.served.recommender.item_ids) and holder.served.version == registry.version
        assert holder.poll_once() is False
    finally:
        holder.stop()


def test_the_dag_parses_runs_ingest_and_emits_the_new_items_asset() -> None:
    """Parsed in a fresh interpreter (as the DAG processor does): its one task, outlet, params and schedule."""
    code = f"""
import importlib.util, json, os, sys
def load():
    spec = importlib.util.spec_from_file_location('recsys_new_items_dag', {str(DAG_FILE)!r})
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag_object
os.environ.pop('RECSYS_NEW_ITEMS_SCHEDULE', None)
dag = load()
task = dag.get_task('ingest')
dag.params.validate()
params = {{k: bool(dag.params.get_param(k).description) for k in ('model_name', 'source', 'max_items')}}
os.environ['RECSYS_NEW_ITEMS_SCHEDULE'] = 'champion'
on_promotion = load()
print(json.dumps({{
    'dag_id': dag.dag_id, 'tasks': [t.task_id for t in dag.tasks], 'schedule': dag.schedule,
    'outlets': [[a.name, a.uri] for a in task.outlets], 'retries': task.retries, 'params': params,
    'on_promotion': [[a.name, a.uri] for a in on_promotion.timetable.asset_condition.objects],
    'heavy': sorted(m for m in ('torch', 'pykeen', 'transformers', 'mlflow') if m in sys.modules),
}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed == {
        "dag_id": "recsys_new_items",
        "tasks": ["ingest"],
        "schedule": None,  # nothing runs until asked
        "outlets": [["recsys_new_items", "recsys://registry/champion/new-items"]],
        "retries": 1,
        "params": {"model_name": True, "source": True, "max_items": True},
        "on_promotion": [["recsys_champion", "recsys://registry/champion"]],
        "heavy": [],
    }

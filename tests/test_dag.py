"""DAG integrity: the project's dags folder parses cleanly, ``recsys_cold_start`` has the promised
shape (tasks, wiring, queues, schedule, retries, documented params) and is exactly the stage graph
``recsys_tasks.stages.STAGES`` declares plus the text encoding's shards, parsing it stays light, and
the trigger form's params map onto `PipelineConfig`.

Airflow 3.3's `DagBag` lives in ``airflow.dag_processing.dagbag`` and no longer takes
``include_examples``: it never loads the example DAGs, so only ``dags/`` is parsed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_tasks.config import ConfigError, PipelineConfig
from recsys_tasks.pipeline import PARAM_KEYS, config_from_params
from recsys_tasks.stages import STAGES

DAGS = Path(__file__).resolve().parents[1] / "dags"
DAG_FILE = DAGS / "recsys_cold_start.py"
HEAVY = ("torch", "pykeen", "transformers", "mlflow")
UPSTREAM = {
    "extract": set(),
    "kg_embed": {"extract"},
    "plan_text_shards": {"extract"},
    "encode_text_shard": {"plan_text_shards"},
    "text_embed": {"extract", "encode_text_shard"},
    "finetune": {"extract", "kg_embed", "text_embed"},
    "evaluate": {"extract", "text_embed", "finetune"},
    "register": {"extract", "kg_embed", "text_embed", "finetune", "evaluate"},
    "announce_champion": {"register"},
}
SHARD_TASKS = ("plan_text_shards", "encode_text_shard")  # `text.shards`: text_embed's encoding, mapped over shards
GPU_TASKS = {"encode_text_shard", "text_embed", "finetune"}


def _dagbag(**env: str):
    """The dags folder parsed with exactly these of the DAG file's environment settings."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as mp:
        for name in (
            "RECSYS_GPU_QUEUE",
            "RECSYS_SCHEDULE",
            "RECSYS_BATCH_SCHEDULE",
            "RECSYS_BATCH_QUEUE",
            "RECSYS_NEW_ITEMS_SCHEDULE",
            "RECSYS_DRIFT_SCHEDULE",
        ):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="module")
def dagbag():
    return _dagbag()  # the defaults: queue "gpu", no schedule


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags["recsys_cold_start"]


# ---------------------------------------------------------------- integrity
def test_dags_folder_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dag_ids) == [
        "recsys_batch_scoring",
        "recsys_cold_start",
        "recsys_drift_check",
        "recsys_new_items",
    ]


def test_tasks_and_their_dependencies(dag) -> None:
    assert {t.task_id: set(t.upstream_task_ids) for t in dag.tasks} == UPSTREAM
    extract = dag.get_task("extract")
    assert extract.downstream_task_ids >= {"kg_embed", "text_embed"}
    for embed in ("kg_embed", "text_embed"):
        assert "finetune" in dag.get_task(embed).downstream_task_ids


def test_only_text_encoding_and_finetune_run_on_the_gpu_queue(dag) -> None:
    on_gpu = {t.task_id for t in dag.tasks if t.queue == "gpu"}
    assert on_gpu == GPU_TASKS


def test_text_encoding_is_mapped_over_the_planned_shards_before_text_embed(dag) -> None:
    """The shards' count comes from the run's config (``text.shards``), so the form's overrides set it: a task
    mapped over the plan's list. text_embed runs once they succeeded, or when there are none (1 shard: the
    mapped task expands to nothing and is skipped), never after a failed one."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert isinstance(dag.get_task("encode_text_shard"), MappedOperator)
    assert dag.get_task("text_embed").trigger_rule == "none_failed"
    assert all(dag.get_task(t).trigger_rule == "all_success" for t in UPSTREAM if t != "text_embed")


def test_the_dag_is_the_declared_stage_graph(dag) -> None:
    """One task per stage, its upstream tasks the stages it ``needs``, its docs the stage's, and the
    GPU queue exactly for the stages declared ``gpu``: the DAG is built from `STAGES`, not beside it."""
    tasks = {t.task_id: t for t in dag.tasks if t.task_id not in ("announce_champion", *SHARD_TASKS)}
    assert list(tasks) == [stage.name for stage in STAGES]
    upstream = {name: set(t.upstream_task_ids) - set(SHARD_TASKS) for name, t in tasks.items()}
    assert upstream == {s.name: set(s.needs) for s in STAGES}
    assert {name: t.doc_md for name, t in tasks.items()} == {s.name: s.doc for s in STAGES}
    gpu = {s.name for s in STAGES if s.gpu}
    assert gpu and {name for name, t in tasks.items() if t.queue == "gpu"} == gpu
    assert all(t.queue != "gpu" for name, t in tasks.items() if name not in gpu)


def test_the_environment_names_the_gpu_queue_and_the_schedule() -> None:
    bag = _dagbag(RECSYS_GPU_QUEUE="a100", RECSYS_SCHEDULE="@weekly")
    assert bag.import_errors == {}
    dag = bag.dags["recsys_cold_start"]
    queues = {t.task_id: t.queue for t in dag.tasks}
    assert {name for name, queue in queues.items() if queue == "a100"} == {s.name for s in STAGES if s.gpu} | {
        "encode_text_shard"
    }
    assert "gpu" not in queues.values()
    assert dag.schedule == "@weekly"


def test_schedule_catchup_retries_and_docs(dag) -> None:
    assert dag.schedule is None  # without RECSYS_SCHEDULE: unpausing the DAG never starts an unrequested run
    assert dag.catchup is False
    assert dag.default_args["retries"] >= 1
    assert all(t.retries >= 1 for t in dag.tasks)
    assert dag.doc_md and "champion" in dag.doc_md


def test_every_param_is_documented(dag) -> None:
    params = dag.params
    assert {
        "source",
        "holdout",
        "kg_model",
        "kg_epochs",
        "text_model",
        "finetune_epochs",
        "promotion_margin",
        "overrides",
    } <= set(params.keys())
    untitled = [k for k in params.keys() if not params.get_param(k).schema.get("title")]
    undescribed = [k for k in params.keys() if not params.get_param(k).description]
    assert (untitled, undescribed) == ([], []), "the trigger form shows a title and a description per field"
    assert set(PARAM_KEYS) <= set(params.keys()), "every named param of config_from_params is in the form"


def test_the_untouched_trigger_form_is_valid(dag) -> None:
    """Guards the form's submit button: Airflow's UI treats a field whose schema does not allow null as
    required, so an optional param with an empty default ("" or []) kept the form from being submitted."""
    for key in dag.params.keys():
        param = dag.params.get_param(key)
        types = param.schema.get("type")
        types = types if isinstance(types, list) else [types]
        if param.value in (None, "", []):
            assert "null" in types and param.value is None, f"{key}: optional, so null by default"
    dag.params.validate()  # the defaults satisfy every schema


def test_parsing_the_dag_file_imports_no_heavy_library() -> None:
    """A fresh interpreter imports the DAG file as the DAG processor would; nothing heavy may load."""
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('recsys_cold_start_dag', {str(DAG_FILE)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "assert module.dag_object.dag_id == 'recsys_cold_start'\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


# ---------------------------------------------------------------- trigger form -> config
def test_config_from_params_maps_the_trigger_form() -> None:
    cfg = config_from_params(
        {
            "source": "/data/ml",
            "holdout": True,
            "seed": 7,
            "kg_model": "ComplEx",
            "kg_epochs": 3,
            "text_model": "/models/bert",
            "finetune_epochs": 4,
            "promotion_margin": 0.05,
            "model_name": "other",
            "overrides": ["finetune.dim=16", "evaluate.k=10"],
        }
    )
    assert (cfg.extract.source, cfg.extract.seed) == ("/data/ml", 7)
    assert (cfg.kg.model, cfg.kg.epochs) == ("ComplEx", 3)
    assert cfg.text.model == "/models/bert"
    assert cfg.finetune.epochs == 4 and cfg.finetune.dim == 16 and cfg.evaluate.k == 10
    assert (cfg.registry.margin, cfg.registry.model_name) == (0.05, "other")
    assert cfg.extract.holdout


def test_config_from_params_defaults_match_the_dag_params(dag) -> None:
    """Triggering with the form untouched gives the library defaults."""
    form = {k: dag.params[k] for k in dag.params.keys()}
    assert config_from_params(form) == PipelineConfig()
    assert config_from_params(None) == PipelineConfig()


def test_holdout_off_sets_every_fraction_to_zero() -> None:
    cfg = config_from_params({"holdout": False})
    assert (cfg.extract.cold_user_frac, cfg.extract.cold_item_frac, cfg.extract.warm_test_frac) == (0.0, 0.0, 0.0)
    assert not cfg.extract.holdout


def test_overrides_apply_after_named_params() -> None:
    cfg = config_from_params({"kg_epochs": 3, "overrides": ["kg.epochs=9"]})
    assert cfg.kg.epochs == 9


@pytest.mark.parametrize(
    "params",
    [
        {"overrides": ["nosuch.key=1"]},
        {"overrides": ["kg.nosuch=1"]},
        {"overrides": ["kg.epochs"]},
        {"kg_epochs": "many"},
    ],
    ids=["unknown-section", "unknown-key", "no-value", "bad-value"],
)
def test_config_from_params_rejects_bad_overrides(params: dict) -> None:
    with pytest.raises(ConfigError):
        config_from_params(params)


# ---------------------------------------------------------------- sharded text encoding, run
SHARDS_SCRIPT = """
import json, sys
sys.path.insert(0, {dags!r})
import recsys_cold_start as module
from airflow.models import TaskInstance
from airflow.utils.session import create_session
runs = []
for conf in json.loads({confs!r}):  # the text branch runs; every other task is marked success unrun
    run = module.dag_object.test(run_conf=conf, mark_success_pattern={rest!r})
    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.run_id == run.run_id).all()
        states = sorted((ti.task_id, ti.map_index, str(ti.state)) for ti in tis if ti.task_id in {branch!r})
    runs.append({{"state": str(run.state), "run_id": run.run_id, "tis": states}})
print("DAGRUNS", json.dumps(runs))
"""
TEXT_BRANCH = ("extract", *SHARD_TASKS, "text_embed")


def _migrated_airflow(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of an Airflow of its own under ``tmp_path`` (this checkout's DAGs and plugins, SQLite),
    its database migrated; ``extra`` added to it."""
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW_CONFIG": str(root / "airflow.cfg"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow' / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(tmp_path / "airflow" / "logs"),
        **extra,
    }
    (tmp_path / "airflow").mkdir()
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return env


@pytest.mark.slow
def test_dag_test_encodes_text_in_mapped_shards_and_text_embed_then_only_assembles(
    tmp_path: Path, tiny_data: Path, tiny_bert: str
) -> None:
    """``dag.test()`` of the real DAG on the tiny data, twice: with ``text.shards=1`` (the default) the mapped
    task is skipped and text_embed encodes every text; with ``text.shards=2`` from the form's overrides two
    mapped tasks encode into the run's cache (the workdir's) and text_embed encodes nothing. The tasks past
    text_embed and kg_embed are marked success without running (``mark_success_pattern``): only the text
    branch is under test here (test_e2e runs every task)."""
    from recsys_tasks.artifacts import StageResult
    from recsys_tasks.pipeline import run_dir

    work = tmp_path / "work"
    env = _migrated_airflow(tmp_path, RECSYS_WORKDIR=str(work), HF_HUB_OFFLINE="1")
    base = {"source": str(tiny_data), "text_model": tiny_bert}
    confs = [
        {**base, "overrides": ["text.device=cpu", f"text.cache_dir={tmp_path / 'unsharded-cache'}"]},
        {**base, "overrides": ["text.device=cpu", "text.shards=2"]},
    ]
    rest = "|".join(t for t in UPSTREAM if t not in TEXT_BRANCH)
    script = SHARDS_SCRIPT.format(dags=str(DAGS), confs=json.dumps(confs), rest=rest, branch=TEXT_BRANCH)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("DAGRUNS ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    unsharded, sharded = json.loads(lines[-1][len("DAGRUNS ") :])
    assert unsharded["state"].endswith("success") and sharded["state"].endswith("success"), proc.stderr[-3000:]
    assert [tuple(t) for t in unsharded["tis"]] == [
        ("encode_text_shard", -1, "skipped"),  # expanded over no shard
        ("extract", -1, "success"),
        ("plan_text_shards", -1, "success"),
        ("text_embed", -1, "success"),
    ]
    assert [tuple(t) for t in sharded["tis"]] == [
        ("encode_text_shard", 0, "success"),
        ("encode_text_shard", 1, "success"),
        ("extract", -1, "success"),
        ("plan_text_shards", -1, "success"),
        ("text_embed", -1, "success"),
    ]
    alone = StageResult.load(run_dir(unsharded["run_id"], work) / "text_embed")
    assembled = StageResult.load(run_dir(sharded["run_id"], work) / "text_embed")
    n_texts = alone.metrics["n_texts"]
    assert alone.metrics["n_encoded"] == n_texts > 0
    assert assembled.metrics["n_texts"] == n_texts and assembled.metrics["n_encoded"] == 0  # all from the shards
    parts = sorted((work / "cache" / "text").glob("*/part-*.npz"))  # the run's workdir cache, one part per shard
    import numpy as np

    assert len(parts) == 2 and sum(len(np.load(p)["keys"]) for p in parts) == n_texts
    for name in ("items", "users", "tastes"):
        np.testing.assert_allclose(np.load(assembled.path(name)), np.load(alone.path(name)), atol=1e-5)


# ---------------------------------------------------------------- recsys_batch_scoring
BATCH_DAG_FILE = DAGS / "recsys_batch_scoring.py"
BATCH_SCRIPT = """
import json, sys
sys.path.insert(0, {dags!r})
import recsys_batch_scoring as module
from airflow.models import TaskInstance
from airflow.utils.session import create_session
run = module.dag_object.test(run_conf=json.loads({conf!r}))
with create_session() as session:
    tis = session.query(TaskInstance).filter(TaskInstance.run_id == run.run_id).all()
    states = sorted((ti.task_id, ti.map_index, str(ti.state)) for ti in tis)
print("DAGRUN", json.dumps({{"state": str(run.state), "tis": states}}))
"""


@pytest.fixture(scope="module")
def batch_dag(dagbag):
    return dagbag.dags["recsys_batch_scoring"]


def test_batch_dag_plans_maps_the_scoring_and_checks(batch_dag) -> None:
    assert {t.task_id: set(t.upstream_task_ids) for t in batch_dag.tasks} == {
        "plan": set(),
        "score": {"plan"},
        "check": {"score"},
    }
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert isinstance(batch_dag.get_task("score"), MappedOperator)  # .expand over the planned shards
    assert batch_dag.schedule is None and batch_dag.catchup is False  # nothing runs until asked
    assert all(t.retries >= 1 for t in batch_dag.tasks)
    for key in ("model_name", "target", "table", "k", "shards", "users"):
        param = batch_dag.params.get_param(key)
        assert param.schema.get("title") and param.description, key
    batch_dag.params.validate()


def test_batch_dag_schedule_from_the_environment() -> None:
    on_cron = _dagbag(RECSYS_BATCH_SCHEDULE="@daily").dags["recsys_batch_scoring"]
    assert on_cron.schedule == "@daily"
    on_promotion = _dagbag(RECSYS_BATCH_SCHEDULE="champion").dags["recsys_batch_scoring"]
    condition = on_promotion.timetable.asset_condition  # either asset's event starts a run
    assert type(condition).__name__ == "AssetAny"
    assert [(asset.name, asset.uri) for asset in condition.objects] == [
        ("recsys_champion", "recsys://registry/champion"),
        ("recsys_new_items", "recsys://registry/champion/new-items"),
    ]


def test_only_a_promotion_emits_the_champion_asset_the_batch_dag_runs_on(dag) -> None:
    """The cold-start DAG's last task has the champion Asset as its outlet and skips (so emits nothing)
    unless register promoted the candidate."""
    from airflow.sdk.exceptions import AirflowSkipException

    announce = dag.get_task("announce_champion")
    assert [(a.name, a.uri) for a in announce.outlets] == [("recsys_champion", "recsys://registry/champion")]
    run = announce.python_callable
    assert run({"promoted": True, "model_version": "7"}) == "7"
    with pytest.raises(AirflowSkipException, match="not promoted: worse on cold-user@0"):
        run({"promoted": False, "reason": "worse on cold-user@0"})


def test_parsing_the_batch_dag_file_imports_no_heavy_library() -> None:
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('recsys_batch_scoring_dag', {str(BATCH_DAG_FILE)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "assert module.dag_object.dag_id == 'recsys_batch_scoring'\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} + ('sqlalchemy.orm', 'pandas') if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not set(json.loads(done.stdout.strip().splitlines()[-1])) & set(HEAVY)


@pytest.mark.slow
def test_batch_dag_test_expands_to_one_task_per_shard(tmp_path: Path, tiny_bundle) -> None:
    """``dag.test()`` on the tiny bundle registered as champion: 3 mapped scoring tasks, every user's rows written."""
    import sqlalchemy as sa
    from test_batch_scoring import register_champion

    registry = register_champion(tiny_bundle, tmp_path, "recsys-batch-dag")
    env = _migrated_airflow(tmp_path, RECSYS_WORKDIR=str(tmp_path / "work"), MLFLOW_TRACKING_URI=registry.uri)
    target = f"sqlite:///{tmp_path / 'recs.db'}"
    conf = {"model_name": registry.name, "target": target, "table": "recs", "k": 3, "shards": 3}
    script = BATCH_SCRIPT.format(dags=str(DAGS), conf=json.dumps(conf))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("DAGRUN ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = json.loads(lines[-1][len("DAGRUN ") :])
    assert run["state"].endswith("success"), proc.stderr[-3000:]
    assert [tuple(t) for t in run["tis"]] == [
        ("check", -1, "success"),
        ("plan", -1, "success"),
        ("score", 0, "success"),
        ("score", 1, "success"),
        ("score", 2, "success"),
    ]
    with sa.create_engine(target).connect() as conn:
        versions = conn.exec_driver_sql(
            "SELECT model_version, COUNT(*), COUNT(DISTINCT user_id) FROM recs GROUP BY 1"
        ).all()
    assert [tuple(v) for v in versions] == [(registry.version, 12 * 3, 12)]

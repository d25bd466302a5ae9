"""End to end: the real DAG, run by Airflow's ``dag.test()`` on a small real sample of
MovieLens-100K, with PyKEEN and a BERT encoder, must leave a champion in MLflow and a full
evaluation table. Runs in a subprocess so Airflow's settings point at a fresh home.

The encoder is conftest's tiny random BERT, named through the trigger form's ``text_model`` (only
the wiring is checked here; test_text checks what the packaged all-MiniLM-L6-v2 encodes), and the
item-ID phase of finetune is cut to 2 epochs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_tasks.artifacts import StageResult
from recsys_tasks.pipeline import run_dir
from recsys_tasks.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
RUN_CONF = {
    "sample_users": 150,
    "kg_epochs": 2,
    "finetune_epochs": 3,
    "kg_dim": 16,
    "overrides": ["kg.early_stopping_frequency=1", "finetune.dim=32", "finetune.id_epochs=2"],
}
SCRIPT = """
import json, sys
sys.path.insert(0, {dags!r})
import recsys_cold_start as module
run = module.dag_object.test(run_conf=json.loads({conf!r}))
print("DAGRUN", json.dumps({{"state": str(run.state), "run_id": run.run_id}}))
"""


@pytest.mark.slow
@pytest.mark.e2e
def test_dag_runs_end_to_end_and_promotes_a_champion(tmp_path: Path, tiny_bert: str) -> None:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW_CONFIG": str(ROOT / "airflow.cfg"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow' / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(tmp_path / "airflow" / "logs"),
        "RECSYS_WORKDIR": str(tmp_path / "work"),
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    (tmp_path / "airflow").mkdir()
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    script = SCRIPT.format(dags=str(ROOT / "dags"), conf=json.dumps({**RUN_CONF, "text_model": tiny_bert}))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("DAGRUN ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = json.loads(lines[-1][len("DAGRUN ") :])
    assert run["state"].endswith("success"), proc.stderr[-3000:]

    # The run's own artifacts: every stage's directory and the summary, under the Airflow run's id.
    runs = list((tmp_path / "work" / "runs").iterdir())
    assert runs == [run_dir(run["run_id"], tmp_path / "work")]
    for stage in ("extract", "kg_embed", "text_embed", "finetune", "evaluate"):
        assert (runs[0] / stage / "result.json").exists(), stage
    assert StageResult.load(runs[0] / "text_embed").info["model"] == tiny_bert  # the form's text_model
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["promoted"] is True and summary["alias"] == "champion"
    assert summary["run_id"] == run["run_id"]
    seconds = summary["stage_seconds"]  # each task's wall time, handed down through XCom
    assert set(seconds) == {stage.name for stage in STAGES}
    assert all(isinstance(s, (int, float)) and s >= 0 for s in seconds.values()), seconds

    # The full evaluation table: every slice, each with its baselines and the model.
    table = (runs[0] / "evaluate" / "table.md").read_text()
    for slice_name in (
        "cold-user@0",
        "cold-user@5",
        "cold-user@10",
        "cold-user@20",
        "cold-user@0+text",
        "cold-item",
        "warm",
    ):
        assert f"| {slice_name} " in table, slice_name
    metrics = summary["metrics"]
    assert 0.0 < metrics["cold_mean_ndcg"] <= 1.0
    assert 0.0 <= metrics["cold-item/auc/model"] <= 1.0

    # MLflow (SQLite in the workdir) holds the registered model with the champion alias.
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    version = MlflowClient().get_model_version_by_alias("recsys-cold-start", "champion")
    assert str(version.version) == summary["model_version"]
    model = mlflow.pyfunc.load_model("models:/recsys-cold-start@champion")
    answer = model.predict(
        [
            {
                "request_id": "new",
                "profile": {"age": 30, "gender": "F", "occupation": "writer"},
                "text": "I like Comedy and Romance movies.",
                "k": 5,
            }
        ]
    )
    assert answer[0]["request_id"] == "new" and len(answer[0]["items"]) == 5
    assert not (tmp_path / "mlruns").exists(), "artifacts must go to the workdir, not the CWD"

"""The DAG on Airflow's CeleryExecutor, as in production but on this machine: the real PostgreSQL
(127.0.0.1:5432; a fresh database for Airflow's metadata and one for MLflow's backend store) and
Redis (127.0.0.1:6379, the Celery broker; every key under a prefix of this run), with the
api-server, scheduler, dag-processor and two Celery workers as subprocesses: one on the default
queue, one on the queue ``gpu`` (both on the CPU here). The DAG is triggered through the REST API
(v2, a token from the simple auth manager) with a tiny run conf; the run must succeed, text_embed
and finetune must have run on the gpu worker and nothing else there, and MLflow's Postgres store
must hold the champion. Every process started here (whole process trees), both databases and the
Redis keys are removed afterwards, whatever happened.

Each worker gets its own ``[core] hostname_callable``: on one machine both would report the same
host name, as two containers would not.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recsys_tasks.processes import process_tree, stop_processes

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "recsys_cold_start"
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
GPU_TASKS = {"text_embed", "finetune"}
UNSHARDED = "encode_text_shard"  # text.shards=1 (the default): mapped over no shard, so skipped, never queued
RUN_CONF = {
    "sample_users": 100,
    "kg_epochs": 1,
    "finetune_epochs": 1,
    "kg_dim": 8,
    "overrides": ["kg.early_stopping_frequency=1", "finetune.dim=16"],
}
RUN_TIMEOUT_S = 600
IDENTITY_MODULE = '''import os


def hostname() -> str:
    """This worker's name in task instances (both workers share one machine here)."""
    return os.environ["RECSYS_TEST_WORKER_NAME"]
'''

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(RUN_TIMEOUT_S + 420)]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- services: databases and Redis
@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    """Two fresh PostgreSQL databases (Airflow, MLflow), dropped afterwards even if connections linger."""
    if not _reachable(PG_HOST, PG_PORT):
        pytest.skip(f"PostgreSQL is unreachable at {PG_HOST}:{PG_PORT}")
    import psycopg

    suffix = uuid.uuid4().hex[:10]
    names = {"airflow": f"recsys_airflow_{suffix}", "mlflow": f"recsys_mlflow_{suffix}"}
    admin = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=test"
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names.values():
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {k: f"{PG_USER}@{PG_HOST}:{PG_PORT}/{v}" for k, v in names.items()}
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in names.values():
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def redis_prefix() -> Iterator[str]:
    """A key prefix for every Celery key of this run (kombu's ``global_keyprefix``), deleted afterwards."""
    if not _reachable(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"Redis is unreachable at {REDIS_HOST}:{REDIS_PORT}")
    import redis

    prefix = f"recsys-test-{uuid.uuid4().hex[:10]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


# ---------------------------------------------------------------- processes
class Processes:
    """Subprocesses, each the leader of its own session, logging to files; `stop` ends whole trees."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.started[name] = proc
        return proc

    def dead(self) -> dict[str, int]:
        return {name: proc.returncode for name, proc in self.started.items() if proc.poll() is not None}

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> list[str]:
        """SIGTERM every tree (descendants found first: a child may have left the process group),
        then SIGKILL whatever is left after a grace period; returns what still runs (nothing)."""
        import psutil

        tree = [p for proc in self.started.values() for p in process_tree(proc.pid)]
        for proc in self.started.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        stop_processes(tree, grace=20)
        for proc in self.started.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(timeout=10)
        return [f"{p.pid} {p.name()}" for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _environment(tmp: Path, dbs: dict[str, str], prefix: str, api_port: int) -> dict[str, str]:
    """Production's settings as environment variables over the repository's airflow.cfg."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    airflow_db = f"postgresql+psycopg2://{dbs['airflow']}"
    passwords = tmp / "passwords.json"
    passwords.write_text(json.dumps({"admin": secrets.token_urlsafe(12)}))
    env.update(
        {
            "AIRFLOW_HOME": str(tmp / "airflow"),
            "AIRFLOW_CONFIG": str(ROOT / "airflow.cfg"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),  # one secret for signers and checkers
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{airflow_db}",
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": prefix,
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(tmp / "airflow" / "logs"),
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # no @weekly run next to the triggered one
            "MLFLOW_TRACKING_URI": f"postgresql://{dbs['mlflow']}",
            "RECSYS_WORKDIR": str(tmp / "work"),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp / "identity"), env.get("PYTHONPATH")])),
        }
    )
    env.pop("RECSYS_GPU_QUEUE", None)  # the DAG's default queue name, "gpu"
    return env


# ---------------------------------------------------------------- the REST API
class Api:
    def __init__(self, base: str) -> None:
        import requests

        self.base, self.session = base, requests.Session()

    def login(self, password: str) -> None:
        response = self.session.post(
            f"{self.base}/auth/token", json={"username": "admin", "password": password}, timeout=30
        )
        assert response.status_code == 201, response.text
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.session.get(f"{self.base}/api/v2{path}", timeout=30, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, f"{self.base}/api/v2{path}", timeout=30, **kwargs)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()


def _wait(what: str, check, timeout: float, procs: Processes, interval: float = 2.0) -> Any:
    """Poll ``check()`` until it returns something truthy; fail early if a component died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = procs.dead()
        assert not dead, f"{what}: component(s) exited {dead}\n" + "\n".join(
            f"--- {name}\n{procs.tail(name)}" for name in dead
        )
        try:
            result = check()
        except OSError:  # the server is not listening yet
            result = None
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# ---------------------------------------------------------------- the test
def test_dag_runs_on_celery_with_a_gpu_queue_postgres_and_redis(
    databases: dict[str, str], redis_prefix: str, tmp_path: Path
) -> None:
    import requests

    bin_dir = Path(sys.executable).parent
    airflow = str(bin_dir / "airflow")
    api_port = _free_port()
    env = _environment(tmp_path, databases, redis_prefix, api_port)
    (tmp_path / "identity").mkdir()
    (tmp_path / "identity" / "recsys_test_worker_identity.py").write_text(IDENTITY_MODULE)
    (tmp_path / "airflow").mkdir()
    (tmp_path / "logs").mkdir()
    workers_cwd = tmp_path / "cwd"  # MLflow's default artifact root (./mlruns) lands here, not in the repo
    workers_cwd.mkdir()

    started = time.monotonic()
    migrate = subprocess.run(
        [airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300, cwd=workers_cwd
    )
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-3000:]

    procs = Processes(tmp_path / "logs")
    try:
        procs.start(
            "api-server",
            [airflow, "api-server", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1"],
            env,
            workers_cwd,
        )
        procs.start("scheduler", [airflow, "scheduler"], env, workers_cwd)
        procs.start("dag-processor", [airflow, "dag-processor"], env, workers_cwd)
        for name, queue in (("worker-default", "default"), ("worker-gpu", "gpu")):
            worker_env = {
                **env,
                "RECSYS_TEST_WORKER_NAME": name,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "recsys_test_worker_identity.hostname",
            }
            procs.start(
                name,
                [
                    airflow,
                    "celery",
                    "worker",
                    "--queues",
                    queue,
                    "--concurrency",
                    "1",
                    "--celery-hostname",
                    f"{name}@%h",
                    "--skip-serve-logs",
                    "--without-gossip",
                    "--without-mingle",
                ],
                worker_env,
                workers_cwd,
            )

        api = Api(f"http://127.0.0.1:{api_port}")
        _wait("the api-server", lambda: api.session.get(f"{api.base}/api/v2/version", timeout=5).ok, 180, procs)
        api.login(json.loads((tmp_path / "passwords.json").read_text())["admin"])
        _wait(f"the DAG {DAG_ID} to be parsed", lambda: api.get(f"/dags/{DAG_ID}").ok, 180, procs)
        assert api.ok("GET", "/importErrors")["total_entries"] == 0
        api.ok("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
        run = api.ok("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": RUN_CONF})
        run_id = run["dag_run_id"]
        ready_s = time.monotonic() - started

        def finished() -> dict | None:
            state = api.ok("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
            return {"state": state} if state in ("success", "failed") else None

        final = _wait(f"DAG run {run_id}", finished, RUN_TIMEOUT_S, procs, interval=5)
        run_s = time.monotonic() - started - ready_s
        tis = {
            ti["task_id"]: ti
            for ti in api.ok("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
        }
        summary = {t: (ti["state"], ti["queue"], ti["hostname"]) for t, ti in tis.items()}
        assert final["state"] == "success", (
            f"{summary}\n--- scheduler\n{procs.tail('scheduler')}\n--- worker-default\n{procs.tail('worker-default')}"
            f"\n--- worker-gpu\n{procs.tail('worker-gpu')}\n--- task logs\n{_task_log_tails(tmp_path)}"
        )

        # text_embed and finetune went to the queue gpu and ran on the gpu worker; nothing else did.
        assert set(tis) == {
            "extract",
            "kg_embed",
            "plan_text_shards",
            UNSHARDED,
            "text_embed",
            "finetune",
            "evaluate",
            "register",
            "announce_champion",
        }
        assert tis.pop(UNSHARDED)["state"] == "skipped", summary
        for task_id, ti in tis.items():
            on_gpu = task_id in GPU_TASKS
            assert ti["state"] == "success", summary
            assert ti["queue"] == ("gpu" if on_gpu else "default"), summary
            assert ti["hostname"] == ("worker-gpu" if on_gpu else "worker-default"), summary
        gpu_log, cpu_log = procs.tail("worker-gpu", 10**7), procs.tail("worker-default", 10**7)
        for task_id in tis:
            assert (f"task_id='{task_id}'" in gpu_log) == (task_id in GPU_TASKS), task_id
            assert (f"task_id='{task_id}'" in cpu_log) == (task_id not in GPU_TASKS), task_id

        # MLflow's Postgres store holds the champion the register task reported.
        registered = api.ok(
            "GET",
            f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/register/xcomEntries/return_value",
            params={"deserialize": True},
        )["value"]
        if isinstance(registered, str):
            registered = json.loads(registered)
        assert registered["alias"] == "champion" and registered["promoted"] is True
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
        champion = client.get_model_version_by_alias(registered["model_name"], "champion")
        assert str(champion.version) == str(registered["model_version"])
        assert client.get_run(champion.run_id).data.tags["promotion.promoted"] == "True"
        print(f"\ndistributed run: components ready in {ready_s:.0f}s, DAG run {run_s:.0f}s; {summary}")
    except requests.ConnectionError as exc:
        raise AssertionError(f"{exc}\n--- api-server\n{procs.tail('api-server')}") from exc
    finally:
        survivors = procs.stop()
    assert survivors == [], f"processes still alive after the stop: {survivors}"


def _task_log_tails(tmp: Path, chars: int = 2500) -> str:
    logs = sorted((tmp / "airflow" / "logs").rglob("*.log"))
    return "\n".join(f"--- {p.relative_to(tmp)}\n{p.read_text(errors='replace')[-chars:]}" for p in logs[-8:])

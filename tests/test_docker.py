"""docker/: the Compose stack and the images, checked without a Docker engine.

The file is read as YAML (anchors and merge keys resolved) to check what the production setup
promises: the services of Airflow 3's official CeleryExecutor stack plus MLflow and the API,
Airflow pointed at Postgres and Redis on CeleryExecutor, a GPU pool on queue ``gpu`` with one task
at a time and an NVIDIA device, MLflow on its own Postgres database serving artifacts from a
volume, images built FROM apache/airflow:3.3.2. ``docker-compose config`` (or ``docker compose
config``), when a client is installed, validates the file against Compose's schema with
``.env.example`` as the environment; without one that test is skipped and says why.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker", "airflow-worker-gpu"}
SERVICES = AIRFLOW_SERVICES | {"postgres", "redis", "mlflow", "recsys-api"}
BASE = "apache/airflow:3.3.2"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(e.split("=", 1) for e in env) if isinstance(env, list) else {k: str(v) for k, v in env.items()}


def _compose_client() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


# ---------------------------------------------------------------- the stack
def test_services_are_the_official_celery_stack_plus_mlflow_and_the_api(services: dict[str, Any]) -> None:
    assert set(services) == SERVICES


def test_airflow_runs_celery_on_postgres_and_redis(services: dict[str, Any]) -> None:
    secrets = set()
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert re.match(r"postgresql\+psycopg2://[^@]+@postgres/", env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]), name
        assert re.match(r"db\+postgresql://[^@]+@postgres/", env["AIRFLOW__CELERY__RESULT_BACKEND"]), name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://") and "@redis:6379" in env[
            "AIRFLOW__CELERY__BROKER_URL"], name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/", name
        assert env["RECSYS_GPU_QUEUE"] == "gpu" and env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert env["RECSYS_WORKDIR"] == "/opt/airflow/recsys", name
        assert "recsys-work:/opt/airflow/recsys" in services[name]["volumes"], name  # tasks pass paths
        secrets.add(env["AIRFLOW__API_AUTH__JWT_SECRET"])
    assert len(secrets) == 1  # every component signs and checks task tokens with the same secret


def test_components_run_their_airflow_commands(services: dict[str, Any]) -> None:
    assert _command(services["airflow-apiserver"]) == ["api-server"]
    assert _command(services["airflow-scheduler"]) == ["scheduler"]
    assert _command(services["airflow-dag-processor"]) == ["dag-processor"]
    assert _command(services["airflow-triggerer"]) == ["triggerer"]
    assert _env(services["airflow-init"])["_AIRFLOW_DB_MIGRATE"] == "true"
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully", name


def test_cpu_worker_takes_the_default_queue(services: dict[str, Any]) -> None:
    command = _command(services["airflow-worker"])
    assert command[:2] == ["celery", "worker"] and "-q" not in command and "--queues" not in command
    assert "deploy" not in services["airflow-worker"]


def test_gpu_worker_takes_only_the_gpu_queue_one_task_at_a_time_on_an_nvidia_device(
    services: dict[str, Any]
) -> None:
    gpu = services["airflow-worker-gpu"]
    command = _command(gpu)
    assert command[:2] == ["celery", "worker"]
    assert command[command.index("-q") + 1] == "gpu"
    assert command[command.index("--concurrency") + 1] == "1"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert gpu["image"] != services["airflow-worker"]["image"]


def test_mlflow_server_has_a_postgres_backend_of_its_own_and_serves_artifacts_from_a_volume(
    services: dict[str, Any], compose: dict[str, Any]
) -> None:
    command = _command(services["mlflow"])
    backend = command[command.index("--backend-store-uri") + 1]
    assert backend.startswith("postgresql://") and "@postgres/" in backend
    airflow_db = _env(services["airflow-scheduler"])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].rsplit("/", 1)[1]
    assert backend.rsplit("/", 1)[1] != airflow_db  # a second database, not Airflow's
    assert "--serve-artifacts" in command
    destination = command[command.index("--artifacts-destination") + 1]
    assert any(v.split(":")[1] == destination for v in services["mlflow"]["volumes"])
    assert set(compose["volumes"]) >= {"postgres-db-volume", "mlflow-artifacts", "recsys-work"}
    init = services["postgres"]["volumes"]
    script = next(v.split(":")[0] for v in init if "docker-entrypoint-initdb.d" in v)
    assert "CREATE DATABASE" in (DOCKER / script).read_text()  # the MLflow database exists on first start


def test_serving_api_runs_recsys_serve_against_the_mlflow_server(services: dict[str, Any]) -> None:
    api = services["recsys-api"]
    assert api["entrypoint"] == ["recsys"]
    assert _command(api) == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert _env(api)["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "8000:8000" in api["ports"]


def test_env_example_sets_every_variable_compose_needs() -> None:
    """Variables used without a default must be in .env.example, or Compose runs with blanks."""
    text = COMPOSE.read_text()
    required = set(re.findall(r"(?<!\$)\$\{(\w+)\}", text))
    example = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
               if "=" in line and not line.startswith("#")}
    assert required and required <= example


# ---------------------------------------------------------------- the images
@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_images_build_from_airflow_3_3_2_and_install_the_project(dockerfile: str) -> None:
    text = (DOCKER / dockerfile).read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert froms and all(f == BASE or f.startswith(BASE + "-python3.11") for f in froms), froms
    assert "requirements.txt" in text and "--no-deps recbole==1.2.1" in text
    assert re.search(r"pip install --no-cache-dir --no-deps /opt/recsys\b", text)
    for source in re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)\s", text, flags=re.MULTILINE):
        assert (ROOT / source).exists(), f"{dockerfile} copies {source}, which is not in the repository"


def test_gpu_image_takes_a_cuda_build_of_torch_from_the_pytorch_index() -> None:
    text = (DOCKER / "Dockerfile.gpu").read_text()
    assert re.search(r"--index-url \"https://download\.pytorch\.org/whl/\$\{CUDA_TAG\}\"", text)
    assert re.search(r"^ARG CUDA_TAG=cu\d+$", text, flags=re.MULTILINE)
    assert 'TORCH_VERSION=2.13.0' in text and "torch.version.cuda" in text  # the build fails on a CPU wheel
    cpu = (DOCKER / "Dockerfile").read_text()
    assert "https://download.pytorch.org/whl/cpu" in cpu


def test_build_context_leaves_out_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".recsys", ".airflow", "docker/.env"} <= set(ignored)


# ---------------------------------------------------------------- Compose's own validation
def test_docker_compose_config_validates_the_file() -> None:
    client = _compose_client()
    if client is None:
        pytest.skip("no Compose client (docker-compose or the docker compose plugin) is installed; "
                    "`apt-get install -y docker-compose` adds one (no Docker engine needed)")
    done = subprocess.run([*client, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config"],
                          capture_output=True, text=True, timeout=120, cwd=DOCKER)
    assert done.returncode == 0, done.stderr
    assert "is not set" not in done.stderr, done.stderr  # .env.example covers every variable
    resolved = yaml.safe_load(done.stdout)["services"]
    assert set(resolved) == SERVICES
    gpu = resolved["airflow-worker-gpu"]
    command = _command(gpu)
    assert command[command.index("-q") + 1] == "gpu"
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    for name in AIRFLOW_SERVICES:
        env = _env(resolved[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://:@redis:6379/0"

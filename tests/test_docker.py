"""docker/: the Compose stack and the images, checked without a Docker engine.

The file is read as YAML (anchors and merge keys resolved) to check what the production setup
promises: the services of Airflow 3's official CeleryExecutor stack plus MLflow and the API,
Airflow pointed at Postgres and Redis on CeleryExecutor, a GPU pool on queue ``gpu`` with one task
at a time and an NVIDIA device, MLflow on its own Postgres database serving artifacts from a
volume, images built FROM apache/airflow:3.3.2. ``docker-compose config`` (or ``docker compose
config``), when a client is installed, validates the file against Compose's schema with
``.env.example`` plus generated secrets as the environment; without one that test is skipped and
says why.

Closed by default (issue 18, docs/security.md): every published port on 127.0.0.1 unless
``RECSYS_BIND`` says otherwise, every secret required (``${VAR:?...}``) and empty in
``.env.example``, no secret on a command line, MLflow behind its basic-auth app, the API behind a
required key. These are checked on the raw file and on the file interpolated the way Compose
does (`_interpolate`), so they run without a Compose client.
"""

from __future__ import annotations

import configparser
import re
import secrets
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
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-gpu",
}
SERVICES = AIRFLOW_SERVICES | {"postgres", "redis", "mlflow", "recsys-api"}
BASE = "apache/airflow:3.3.2"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|API_KEY")
SECRETS = {
    "POSTGRES_PASSWORD",
    "_AIRFLOW_WWW_USER_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SECRET_KEY",
    "RECSYS_API_KEY",
}
PUBLISHED = {"airflow-apiserver": 8080, "mlflow": 5000, "recsys-api": 8000}
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; $${...} is a literal `$`.
_REFERENCE = re.compile(r"(?<!\$)\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(_compose_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(e.split("=", 1) for e in env) if isinstance(env, list) else {k: str(v) for k, v in env.items()}


def _compose_text() -> str:
    """The Compose file without its comment lines (Compose interpolates values, not comments)."""
    return "".join(line for line in COMPOSE.read_text().splitlines(keepends=True) if not line.lstrip().startswith("#"))


def _env_file(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


class Refused(ValueError):
    """Compose would refuse to start: required variables are unset or empty."""


def _interpolate(text: str, env: dict[str, str]) -> str:
    """``text`` with its ``${...}`` resolved as Compose resolves them; `Refused` naming every
    required variable that is missing (``:?`` also refuses an empty value)."""
    missing: list[str] = []

    def resolve(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op is not None and op.endswith("?") and empty:
            missing.append(name)
            return ""
        if op is not None and op.endswith("-") and empty:
            return arg
        return value or ""

    out = _REFERENCE.sub(resolve, text)
    if missing:
        raise Refused(", ".join(sorted(set(missing))))
    return out.replace("$$", "$")


def _filled_env() -> dict[str, str]:
    """.env.example with every empty secret set to a fresh random value (what an operator does)."""
    env = _env_file(ENV_EXAMPLE)
    return {**env, **{name: secrets.token_urlsafe(24) for name in SECRETS}}


def _references(text: str) -> list[tuple[str, str | None, str]]:
    return [(m.group(1), m.group(2), m.group(3) or "") for m in _REFERENCE.finditer(text)]


def _argv_strings(service: dict[str, Any]) -> list[str]:
    """What a service puts on a process's command line: entrypoint, command, healthcheck test."""
    out: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key, [])
        out += [value] if isinstance(value, str) else [str(v) for v in value]
    test = service.get("healthcheck", {}).get("test", [])
    out += [test] if isinstance(test, str) else [str(v) for v in test]
    return out


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
        assert (
            env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
            and "@redis:6379" in env["AIRFLOW__CELERY__BROKER_URL"]
        ), name
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


def test_gpu_worker_takes_only_the_gpu_queue_one_task_at_a_time_on_an_nvidia_device(services: dict[str, Any]) -> None:
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
    backend = _env(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"]  # `mlflow server` reads it: not on argv
    assert backend.startswith("postgresql://") and "@postgres/" in backend
    assert "--backend-store-uri" not in command
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
    assert [port.rsplit(":", 2)[-2:] for port in api["ports"]] == [["8000", "8000"]]


def test_env_example_lists_every_variable_compose_needs() -> None:
    """Variables used without a default are listed in .env.example (the secrets empty, to be filled in)."""
    required = {name for name, op, _ in _references(_compose_text()) if op is None or op.endswith("?")}
    assert required and required <= set(_env_file(ENV_EXAMPLE))


# ---------------------------------------------------------------- closed by default (issue 18)
def test_every_secret_is_required_with_a_message() -> None:
    """A secret read as ${VAR} or ${VAR:-} lets the stack start with a blank one; ${VAR:?msg} refuses."""
    references = [(name, op, arg) for name, op, arg in _references(_compose_text()) if SECRET_NAME.search(name)]
    assert {name for name, _, _ in references} == SECRETS
    for name, op, message in references:
        assert op == ":?" and name in message, f"${{{name}{op or ''}{message}}}: a secret must be ${{{name}:?...}}"


def test_env_example_holds_no_working_credentials() -> None:
    example = _env_file(ENV_EXAMPLE)
    assert {name: example[name] for name in SECRETS} == dict.fromkeys(SECRETS, "")
    with pytest.raises(Refused) as refused:  # Compose refuses to start on the example as it is
        _interpolate(_compose_text(), example)
    assert set(str(refused.value).split(", ")) == SECRETS


def test_every_published_port_listens_on_loopback_unless_configured(services: dict[str, Any]) -> None:
    raw = {name: service.get("ports", []) for name, service in services.items() if service.get("ports")}
    assert set(raw) == set(PUBLISHED)  # postgres and redis are never published
    for name, ports in raw.items():
        assert ports == [f"${{RECSYS_BIND:-127.0.0.1}}:{PUBLISHED[name]}:{PUBLISHED[name]}"], (name, ports)
    for bind in ("127.0.0.1", "0.0.0.0"):
        resolved = yaml.safe_load(_interpolate(_compose_text(), {**_filled_env(), "RECSYS_BIND": bind}))
        for name, port in PUBLISHED.items():
            assert resolved["services"][name]["ports"] == [f"{bind}:{port}:{port}"], name
    unset = {k: v for k, v in _filled_env().items() if k != "RECSYS_BIND"}
    resolved = yaml.safe_load(_interpolate(_compose_text(), unset))["services"]
    assert all(resolved[name]["ports"][0].startswith("127.0.0.1:") for name in PUBLISHED)


def test_no_secret_on_a_command_line(services: dict[str, Any]) -> None:
    """argv is readable by every process on the host (ps, /proc): secrets go in the environment."""
    resolved = yaml.safe_load(_interpolate(_compose_text(), filled := _filled_env()))["services"]
    for name, service in services.items():
        for arg in _argv_strings(service):
            secret = [ref for ref, _, _ in _references(arg) if SECRET_NAME.search(ref)]
            assert not secret, f"{name} puts {secret} on a command line"
        for arg in _argv_strings(resolved[name]):
            assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", arg), f"{name}: credentials in a URL on a command line"
            assert not any(filled[s] in arg for s in SECRETS), f"{name}: a secret on a command line"


def test_mlflow_requires_authentication(services: dict[str, Any]) -> None:
    """Whoever can register a version or move `champion` runs code in the workers and the API."""
    mlflow = services["mlflow"]
    command = _command(mlflow)
    assert command[command.index("--app-name") + 1] == "basic-auth"
    env = _env(mlflow)
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"].startswith("${MLFLOW_FLASK_SECRET_KEY:?")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in mlflow["volumes"]}
    ini_text = (DOCKER / mounts[env["MLFLOW_AUTH_CONFIG_PATH"]]).read_text()
    ini = configparser.ConfigParser()
    ini.read_string(ini_text)
    assert ini["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    assert "admin_password" not in ini["mlflow"]  # only from the required environment variable
    users_db = ini["mlflow"]["database_uri"].removeprefix("sqlite:///")
    assert any(users_db.startswith(target + "/") for target, source in mounts.items() if source in {"mlflow-auth"}), (
        "the users' database lives in a volume"
    )
    for name, service in services.items():  # every client signs in
        client_env = _env(service)
        if client_env.get("MLFLOW_TRACKING_URI", "").startswith("http://mlflow"):
            assert client_env["MLFLOW_TRACKING_USERNAME"] == env["MLFLOW_AUTH_ADMIN_USERNAME"], name
            assert client_env["MLFLOW_TRACKING_PASSWORD"] == env["MLFLOW_AUTH_ADMIN_PASSWORD"], name
    pin = re.search(r"^mlflow==(\S+)$", (ROOT / "requirements.txt").read_text(), flags=re.MULTILINE).group(1)
    assert f'"mlflow[auth]=={pin}"' in (DOCKER / "Dockerfile").read_text()  # the app needs Flask-WTF


def test_api_requires_a_key(services: dict[str, Any]) -> None:
    assert _env(services["recsys-api"])["RECSYS_API_KEY"].startswith("${RECSYS_API_KEY:?")


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
    assert "TORCH_VERSION=2.13.0" in text and "torch.version.cuda" in text  # the build fails on a CPU wheel
    cpu = (DOCKER / "Dockerfile").read_text()
    assert "https://download.pytorch.org/whl/cpu" in cpu


def test_build_context_leaves_out_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".recsys", ".airflow", "docker/.env"} <= set(ignored)


# ---------------------------------------------------------------- Compose's own validation
def test_docker_compose_config_validates_the_file(tmp_path: Path) -> None:
    client = _compose_client()
    if client is None:
        pytest.skip(
            "no Compose client (docker-compose or the docker compose plugin) is installed; "
            "`apt-get install -y docker-compose` adds one (no Docker engine needed)"
        )
    refused = subprocess.run(
        [*client, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=DOCKER,
    )
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr  # the secrets are empty
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in _filled_env().items()))
    done = subprocess.run(
        [*client, "--env-file", str(env_file), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=DOCKER,
    )
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
    for name, port in PUBLISHED.items():  # Compose v1 prints "ip:host:container", v2 a mapping
        [mapping] = resolved[name]["ports"]
        if isinstance(mapping, str):
            assert mapping.removesuffix("/tcp") == f"127.0.0.1:{port}:{port}", name
        else:
            assert (mapping["host_ip"], str(mapping["published"])) == ("127.0.0.1", str(port)), name

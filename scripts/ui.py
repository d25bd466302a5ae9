"""`make ui`: the Airflow UI, the MLflow UI and the serving API of this checkout, until Ctrl-C.

Starts, on loopback and the embedded default of `scripts/env.sh` (SQLite for Airflow and MLflow,
the workdir's runs and artifacts): Airflow's api-server (UI and REST API, with the `recsys`
plugin's model report), scheduler, dag-processor and triggerer; ``mlflow server`` on the workdir's
store and artifacts; and ``recsys serve`` as soon as the registered model has a ``champion`` (at
once if it has one, else when a DAG run promotes one). Prints the URLs and the logins: one user per
role (``--users``), each with a generated password kept in Airflow's simple auth manager file
``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated`` (mode 600) and reused on later starts.
Each component logs to ``$AIRFLOW_HOME/logs/components/<name>.log``; Ctrl-C (or SIGTERM) stops them
all, and if one of the Airflow or MLflow components dies, the others are stopped too.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROLES = ("viewer", "user", "op", "admin")
DEFAULT_USERS = "admin:admin,engineer:user,viewer:viewer"
DAG_ID = "recsys_cold_start"
_ALPHABET = "abcdefghkmnpqrstuvwxyzABCDEFGHKMNPQRSTUVWXYZ23456789"  # Airflow's own, no look-alikes


class Stack:
    """Child processes, each the leader of its own session, logging to one file each."""

    def __init__(self, logs: Path, env: dict[str, str], cwd: Path) -> None:
        self.logs, self.env, self.cwd = logs, env, cwd
        self.procs: dict[str, subprocess.Popen] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str]) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                args,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def dead(self) -> dict[str, int]:
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    def tail(self, name: str, lines: int = 25) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """SIGTERM every process tree (children found first: some leave their group), SIGKILL after 20 s."""
        from recsys_tasks.processes import process_tree, stop_processes

        stop_processes([p for proc in self.procs.values() for p in process_tree(proc.pid)], grace=20)
        for proc in self.procs.values():
            proc.poll()


def users_and_passwords(spec: str, password_file: Path) -> list[tuple[str, str, str]]:
    """(user, role, password) per ``user:role``; passwords missing from the file are generated and stored."""
    users = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, role = item.partition(":")
        if not name or role not in ROLES:
            raise SystemExit(f"--users: {item!r} is not user:role with a role among {', '.join(ROLES)}")
        users.append((name, role))
    stored = json.loads(password_file.read_text() or "{}") if password_file.exists() else {}
    for name, _ in users:
        stored.setdefault(name, "".join(secrets.choice(_ALPHABET) for _ in range(16)))
    password_file.parent.mkdir(parents=True, exist_ok=True)
    password_file.touch(mode=0o600)
    password_file.chmod(0o600)
    password_file.write_text(json.dumps(stored) + "\n")
    return [(name, role, stored[name]) for name, role in users]


def _secrets(path: Path) -> dict[str, str]:
    """The API server's JWT secret and secret key, generated once and kept (mode 600)."""
    stored = json.loads(path.read_text()) if path.exists() else {}
    if not stored:
        stored = {
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        }
        path.touch(mode=0o600)
        path.write_text(json.dumps(stored) + "\n")
    return stored


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM: stop everything and exit 0 (a BaseException, so no `except Exception` swallows it)."""


def _on_signal(signum, _frame) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _wait(stack: Stack, what: str, url: str, timeout: float, names: tuple[str, ...] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = {n: rc for n, rc in stack.dead().items() if names is None or n in names}
        if dead:
            raise RuntimeError(
                f"{what}: {', '.join(dead)} exited ({dead})\n" + "\n".join(f"--- {n}\n{stack.tail(n)}" for n in dead)
            )
        if _up(url):
            return
        time.sleep(1)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s")


def _champion(model_name: str) -> str | None:
    from recsys_tasks.registry.store import alias_version

    try:
        return alias_version(model_name)
    except Exception as exc:  # noqa: BLE001 - a store being written by a task; try again on the next poll
        print(f"(could not read the registry yet: {type(exc).__name__})", flush=True)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface for every component (loopback by default)")
    parser.add_argument("--airflow-port", type=int, default=8080)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--serve-port", type=int, default=8000)
    parser.add_argument("--no-serve", action="store_true", help="do not start the serving API")
    parser.add_argument("--users", default=DEFAULT_USERS, help=f"user:role,... (roles: {', '.join(ROLES)})")
    parser.add_argument("--model-name", default="recsys-cold-start", help="registered model the API serves")
    args = parser.parse_args(argv)
    if not os.environ.get("AIRFLOW_HOME") or not os.environ.get("RECSYS_WORKDIR"):
        raise SystemExit("source scripts/env.sh first (or run `make ui`): AIRFLOW_HOME and RECSYS_WORKDIR are unset")

    from recsys_tasks.config import tracking_uri, workdir

    home, work = Path(os.environ["AIRFLOW_HOME"]).resolve(), workdir()
    work.mkdir(parents=True, exist_ok=True)
    password_file = home / "simple_auth_manager_passwords.json.generated"
    logins = users_and_passwords(args.users, password_file)
    airflow_url = f"http://{args.host}:{args.airflow_port}"
    mlflow_uri = tracking_uri()
    external_mlflow = mlflow_uri.startswith(("http://", "https://"))
    mlflow_url = mlflow_uri.rstrip("/") if external_mlflow else f"http://{args.host}:{args.mlflow_port}"
    env = {
        **os.environ,
        "AIRFLOW__API__BASE_URL": airflow_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{airflow_url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{n}:{r}" for n, r, _ in logins),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
        "RECSYS_MLFLOW_UI_URL": mlflow_url,
    }
    for key, value in _secrets(home / "ui-secrets.json").items():  # one JWT secret for signers and checkers,
        env.setdefault(key, value)  # kept so that a restart keeps the sessions
    airflow = str(BIN / "airflow")

    migrate = subprocess.run([airflow, "db", "migrate"], env=env, cwd=work, capture_output=True, text=True)
    if migrate.returncode != 0:
        print(migrate.stdout[-3000:] + migrate.stderr[-3000:], file=sys.stderr)
        return 1

    stack = Stack(home / "logs" / "components", env, work)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    core = ("api-server", "scheduler", "dag-processor", "triggerer") + (() if external_mlflow else ("mlflow",))
    try:
        if not external_mlflow:
            artifacts = (work / "mlartifacts").resolve().as_uri()
            stack.start(
                "mlflow",
                [
                    str(BIN / "mlflow"),
                    "server",
                    "--backend-store-uri",
                    mlflow_uri,
                    "--default-artifact-root",
                    artifacts,
                    "--host",
                    args.host,
                    "--port",
                    str(args.mlflow_port),
                    "--workers",
                    "1",
                ],
            )
        stack.start(
            "api-server",
            [airflow, "api-server", "--host", args.host, "--port", str(args.airflow_port), "--workers", "1"],
        )
        for name in ("scheduler", "dag-processor", "triggerer"):
            stack.start(name, [airflow, name])
        if not external_mlflow:
            _wait(stack, "MLflow", f"{mlflow_url}/health", 300, core)
        _wait(stack, "the Airflow API server", f"{airflow_url}/api/v2/monitor/health", 300, core)
        print(_banner(airflow_url, mlflow_url, args.model_name, logins, password_file, stack.logs), flush=True)

        serve_url, served, next_poll = f"http://{args.host}:{args.serve_port}", False, 0.0
        if args.no_serve:
            print("Serving API: not started (--no-serve)", flush=True)
        while True:
            dead = {n: rc for n, rc in stack.dead().items() if n in core}
            if dead:
                for name in dead:
                    print(
                        f"{name} exited with code {dead[name]}; its log ends with:\n{stack.tail(name)}",
                        file=sys.stderr,
                        flush=True,
                    )
                return 1
            if not args.no_serve and not served and time.monotonic() >= next_poll:
                version = _champion(args.model_name)
                if version is None and next_poll == 0.0:
                    print(
                        f"Serving API: waiting for a champion of {args.model_name} (trigger {DAG_ID} in the "
                        "Airflow UI, or `make run`); it starts here as soon as one is registered.",
                        flush=True,
                    )
                next_poll = time.monotonic() + 10
                if version is not None:
                    stack.start(
                        "serve",
                        [
                            str(BIN / "recsys"),
                            "serve",
                            "--host",
                            args.host,
                            "--port",
                            str(args.serve_port),
                            "--model-name",
                            args.model_name,
                        ],
                    )
                    served = True
                    try:
                        _wait(stack, "the serving API", f"{serve_url}/health", 600, ("serve",))
                        print(f"Serving API:  {serve_url}/docs  (champion v{version}; follows the alias)", flush=True)
                    except RuntimeError as exc:
                        print(f"Serving API did not start: {exc}", file=sys.stderr, flush=True)
            time.sleep(1)
    except Interrupted:
        return 0
    except RuntimeError as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the stop short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping ...", flush=True)
        stack.stop()
        print("stopped", flush=True)


def _banner(
    airflow_url: str, mlflow_url: str, model: str, logins: list[tuple[str, str, str]], password_file: Path, logs: Path
) -> str:
    width = max(len(n) for n, _, _ in logins)
    lines = [
        "",
        "recsys UI is up (Ctrl-C stops everything)",
        f"  Airflow UI:    {airflow_url}    DAG: {airflow_url}/dags/{DAG_ID}",
        f"  Model report:  {airflow_url}/recsys/models/{model}  (also the DAG's 'Model report' tab)",
        f"  MLflow UI:     {mlflow_url}/#/models/{model}",
        "  Log in to Airflow as (one user per role; passwords generated, kept in",
        f"  {password_file}):",
        *(f"    {name.ljust(width)}  {password}   ({role})" for name, role, password in logins),
        f"  Logs:          {logs}/",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""`scripts/ui.py` (``make ui``), the parts that decide who may log in; starting the whole stack is
tests/test_browser.py's job."""

from __future__ import annotations

import importlib.util
import json
import stat
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("recsys_ui_launcher", ROOT / "scripts" / "ui.py")
ui = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ui)


def test_each_user_gets_a_generated_password_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "home" / "passwords.json"
    logins = ui.users_and_passwords("admin:admin,engineer:user,viewer:viewer", path)
    assert [(name, role) for name, role, _ in logins] == [
        ("admin", "admin"),
        ("engineer", "user"),
        ("viewer", "viewer"),
    ]
    passwords = [password for _, _, password in logins]
    assert len(set(passwords)) == 3 and all(len(p) == 16 and p.isalnum() for p in passwords)
    assert json.loads(path.read_text()) == {name: password for name, _, password in logins}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_passwords_survive_a_restart_and_new_users_are_added(tmp_path: Path) -> None:
    path = tmp_path / "passwords.json"
    [(_, _, first)] = ui.users_and_passwords("admin:admin", path)
    again = dict((n, p) for n, _, p in ui.users_and_passwords("admin:admin,ops:op", path))
    assert again["admin"] == first and len(again["ops"]) == 16


@pytest.mark.parametrize("spec", ["admin", "admin:root", ":viewer", "admin:admin,bob"])
def test_a_user_without_a_known_role_is_refused(tmp_path: Path, spec: str) -> None:
    with pytest.raises(SystemExit, match="user:role"):
        ui.users_and_passwords(spec, tmp_path / "passwords.json")
    assert not (tmp_path / "passwords.json").exists()


def test_the_api_servers_secrets_are_generated_once(tmp_path: Path) -> None:
    path = tmp_path / "ui-secrets.json"
    first = ui._secrets(path)
    assert set(first) == {"AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"}
    assert ui._secrets(path) == first and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_without_the_environment_it_says_to_source_env_sh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_HOME", raising=False)
    with pytest.raises(SystemExit, match="scripts/env.sh"):
        ui.main([])

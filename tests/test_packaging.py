"""Packaging: pyproject declares every library the package imports, and the two lock files pin them all."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    """The normalised distribution name of ``numpy>=2`` or ``uvicorn[standard]>=0.30``."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]).lower()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-r "):
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"{path.name}: {line!r} is not pinned with =="
        pins[_name(name)] = version
    return pins


def _imported_top_level(paths) -> set[str]:
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "recsys_tasks"}


def _airflow_extra(by_module) -> set[str]:
    """The airflow extra's distributions, apache-airflow standing for the core and task SDK it installs."""
    extra = {_name(r) for r in PYPROJECT["optional-dependencies"]["airflow"]}
    return extra | ({_name(d) for d in by_module.get("airflow", [])} if "apache-airflow" in extra else set())


def test_pyproject_declares_every_library_the_package_imports() -> None:
    """The package imports its dependencies and the serve extra; only `recsys_tasks.orchestration`, which the DAG
    files alone import, may use the airflow extra too."""
    declared = {_name(r) for r in PYPROJECT["dependencies"]}
    declared |= {_name(r) for r in PYPROJECT["optional-dependencies"]["serve"]}
    orchestration = ROOT / "recsys_tasks" / "orchestration.py"
    by_module = metadata.packages_distributions()
    undeclared = {}
    for paths, allowed in (
        ([p for p in (ROOT / "recsys_tasks").rglob("*.py") if p != orchestration], declared),
        ([orchestration], declared | _airflow_extra(by_module)),
    ):
        for module in sorted(_imported_top_level(paths)):
            dists = {_name(d) for d in by_module.get(module, [])}
            assert dists, f"recsys_tasks imports {module!r}, which no installed distribution provides"
            if not dists & allowed:
                undeclared[module] = sorted(dists)
    assert not undeclared, f"imported but not in pyproject's dependencies (or the serve extra): {undeclared}"


def test_the_lock_pins_every_declared_dependency_once() -> None:
    runtime, dev = _pins(ROOT / "requirements.txt"), _pins(ROOT / "requirements-dev.txt")
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text().splitlines()
    assert not set(runtime) & set(dev), f"pinned in both files: {sorted(set(runtime) & set(dev))}"
    extras = PYPROJECT["optional-dependencies"]
    for name in {_name(r) for r in PYPROJECT["dependencies"]} | {_name(r) for r in extras["serve"]}:
        assert name in runtime, f"{name} is a runtime dependency but requirements.txt does not pin it"
    for name in {_name(r) for r in extras["dev"]} - {"recsys-tasks"}:
        assert name in dev, f"{name} is a dev dependency but requirements-dev.txt does not pin it"
    assert runtime["torch"] == "2.13.0"  # the version whose CPU wheel the install path expects


@pytest.mark.parametrize("requirement", ["numpy>=2", "uvicorn[standard]>=0.30", "PyYAML==6.0.3", "jsonschema_rs==1"])
def test_requirement_names_are_normalised(requirement: str) -> None:
    assert (
        _name(requirement)
        == {
            "numpy>=2": "numpy",
            "uvicorn[standard]>=0.30": "uvicorn",
            "PyYAML==6.0.3": "pyyaml",
            "jsonschema_rs==1": "jsonschema-rs",
        }[requirement]
    )


def test_the_python_312_subset_pins_what_the_locks_pin() -> None:
    """requirements-py312.txt (make test-py312) installs a subset of the locks, at the same versions."""
    locked = {**_pins(ROOT / "requirements.txt"), **_pins(ROOT / "requirements-dev.txt")}
    subset = _pins(ROOT / "requirements-py312.txt")
    assert subset and {name: locked.get(name) for name in subset} == subset
